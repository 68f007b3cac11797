//! How a trip is written as JSON: the field order of the schema in the
//! [module docs](super), with an unrolled writer for the hot path and a
//! general one that can damage a record (a missing or wrong-typed field).

/// The fields of a trip, with money and distance in hundredths and
/// coordinates in micro-degrees.
pub(super) struct Trip {
    pub(super) trip_id: u64,
    pub(super) vendor_id: u8,
    pub(super) pickup_ms: i64,
    pub(super) dropoff_ms: i64,
    pub(super) passenger_count: u32,
    pub(super) distance_c: i64,
    pub(super) pickup_zone: u32,
    pub(super) dropoff_zone: u32,
    pub(super) pickup_lon: i64,
    pub(super) pickup_lat: i64,
    pub(super) dropoff_lon: i64,
    pub(super) dropoff_lat: i64,
    pub(super) fare_c: i64,
    pub(super) tip_c: i64,
    pub(super) total_c: i64,
}

pub(super) const FIELDS: [&str; 15] = [
    "trip_id",
    "vendor_id",
    "pickup_ms",
    "dropoff_ms",
    "passenger_count",
    "trip_distance",
    "pickup_zone",
    "dropoff_zone",
    "pickup_lon",
    "pickup_lat",
    "dropoff_lon",
    "dropoff_lat",
    "fare_amount",
    "tip_amount",
    "total_amount",
];

/// How to damage the JSON of a malformed record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Damage {
    None,
    /// Leave out field `i`.
    Missing(usize),
    /// Write field `i` with this (wrong-typed) JSON text.
    WrongType(usize, &'static str),
}

/// [`write_trip`] without damage, unrolled so that the field names are
/// copied with constant lengths (this is the hot path).
pub(super) fn write_trip_fast(out: &mut Vec<u8>, t: &Trip) {
    out.reserve(400);
    out.extend_from_slice(b"{\"trip_id\":");
    push_u64(out, t.trip_id);
    out.extend_from_slice(b",\"vendor_id\":");
    push_u64(out, t.vendor_id as u64);
    out.extend_from_slice(b",\"pickup_ms\":");
    push_i64(out, t.pickup_ms);
    out.extend_from_slice(b",\"dropoff_ms\":");
    push_i64(out, t.dropoff_ms);
    out.extend_from_slice(b",\"passenger_count\":");
    push_u64(out, t.passenger_count as u64);
    out.extend_from_slice(b",\"trip_distance\":");
    push_hundredths(out, t.distance_c);
    out.extend_from_slice(b",\"pickup_zone\":");
    push_u64(out, t.pickup_zone as u64);
    out.extend_from_slice(b",\"dropoff_zone\":");
    push_u64(out, t.dropoff_zone as u64);
    out.extend_from_slice(b",\"pickup_lon\":");
    push_micro(out, t.pickup_lon);
    out.extend_from_slice(b",\"pickup_lat\":");
    push_micro(out, t.pickup_lat);
    out.extend_from_slice(b",\"dropoff_lon\":");
    push_micro(out, t.dropoff_lon);
    out.extend_from_slice(b",\"dropoff_lat\":");
    push_micro(out, t.dropoff_lat);
    out.extend_from_slice(b",\"fare_amount\":");
    push_hundredths(out, t.fare_c);
    out.extend_from_slice(b",\"tip_amount\":");
    push_hundredths(out, t.tip_c);
    out.extend_from_slice(b",\"total_amount\":");
    push_hundredths(out, t.total_c);
    out.push(b'}');
}

pub(super) fn write_trip(out: &mut Vec<u8>, t: &Trip, damage: Damage) {
    if damage == Damage::None {
        return write_trip_fast(out, t);
    }
    out.push(b'{');
    let mut first = true;
    for (i, name) in FIELDS.iter().enumerate() {
        if damage == Damage::Missing(i) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        if let Damage::WrongType(j, text) = damage {
            if i == j {
                out.extend_from_slice(text.as_bytes());
                continue;
            }
        }
        match i {
            0 => push_u64(out, t.trip_id),
            1 => push_u64(out, t.vendor_id as u64),
            2 => push_i64(out, t.pickup_ms),
            3 => push_i64(out, t.dropoff_ms),
            4 => push_u64(out, t.passenger_count as u64),
            5 => push_hundredths(out, t.distance_c),
            6 => push_u64(out, t.pickup_zone as u64),
            7 => push_u64(out, t.dropoff_zone as u64),
            8 => push_micro(out, t.pickup_lon),
            9 => push_micro(out, t.pickup_lat),
            10 => push_micro(out, t.dropoff_lon),
            11 => push_micro(out, t.dropoff_lat),
            12 => push_hundredths(out, t.fare_c),
            13 => push_hundredths(out, t.tip_c),
            _ => push_hundredths(out, t.total_c),
        }
    }
    out.push(b'}');
}

pub(super) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    // Append a fixed-size block (an inlined copy) and trim it, instead of
    // copying a variable number of digits.
    let digits = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
    let start = out.len();
    out.extend_from_slice(&[b'0'; 20]);
    for d in out[start..start + digits].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.truncate(start + digits);
}

pub(super) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// `v / 100` with exactly two decimals.
pub(super) fn push_hundredths(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let a = v.unsigned_abs();
    push_u64(out, a / 100);
    let f = (a % 100) as u8;
    out.extend_from_slice(&[b'.', b'0' + f / 10, b'0' + f % 10]);
}

/// `v / 1e6` with exactly six decimals.
pub(super) fn push_micro(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let a = v.unsigned_abs();
    push_u64(out, a / 1_000_000);
    out.push(b'.');
    let mut f = a % 1_000_000;
    let mut buf = [b'0'; 6];
    for d in buf.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&buf);
}
