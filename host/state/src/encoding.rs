//! How values and keys are laid out in RocksDB (see the crate docs): the
//! expiry prefix of a TTL state's values, whether a stored key belongs to a
//! TTL state, and key-prefix bounds for scans.

/// Bytes of the expiry prefix of a TTL state's stored value.
pub(crate) const EXPIRY_BYTES: usize = 8;

/// Whether a storage key belongs to a state with a TTL (the high bit of the
/// state id, bytes 4..6 of the key).
#[inline]
pub(crate) fn is_ttl_key(key: &[u8]) -> bool {
    key.get(4).is_some_and(|b| b & 0x80 != 0)
}

/// The payload of a stored TTL value if it has not expired at `now`.
#[inline]
pub(crate) fn live(stored: &[u8], now: i64) -> Option<&[u8]> {
    let (expires, payload) = stored.split_first_chunk::<EXPIRY_BYTES>()?;
    (i64::from_be_bytes(*expires) > now).then_some(payload)
}

/// The payload of a stored value: the value itself without a TTL (`now` is
/// `None`), the value without its expiry if not expired with one.
#[inline]
pub(crate) fn payload_at(stored: &[u8], now: Option<i64>) -> Option<&[u8]> {
    match now {
        Some(now) => live(stored, now),
        None => Some(stored),
    }
}

/// A value to store: the payload, behind the expiry for a TTL state.
#[derive(Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub(crate) expires: Option<i64>,
    pub(crate) payload: &'a [u8],
}

impl Stored<'_> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.payload.len()
            + if self.expires.is_some() {
                EXPIRY_BYTES
            } else {
                0
            }
    }

    /// Write into `out`, of length [`len`](Self::len).
    #[inline]
    pub(crate) fn copy_to(&self, out: &mut [u8]) {
        match self.expires {
            None => out.copy_from_slice(self.payload),
            Some(at) => {
                let (head, tail) = out.split_at_mut(EXPIRY_BYTES);
                head.copy_from_slice(&at.to_be_bytes());
                tail.copy_from_slice(self.payload);
            }
        }
    }

    #[inline]
    pub(crate) fn to_box(self) -> Box<[u8]> {
        match self.expires {
            None => self.payload.into(),
            Some(at) => {
                let mut v = Vec::with_capacity(self.len());
                v.extend_from_slice(&at.to_be_bytes());
                v.extend_from_slice(self.payload);
                v.into_boxed_slice()
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
