//! Random draws shared by the event-time datasets (turbines, clicks), from
//! a portable ChaCha8 stream so that a seed gives the same records on
//! every machine.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Uniform in `[0, 1)`.
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in `0..n` (n > 0).
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((rng.next_u64() as u128 * n as u128) >> 64) as u64
}

/// Uniform in `lo..=hi` (lo <= hi).
pub(crate) fn between(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    lo + below(rng, (hi - lo) as u64 + 1) as i64
}
