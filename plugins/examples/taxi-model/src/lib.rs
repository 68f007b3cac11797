//! The taxi trip record shared by the taxi example plugins (`taxi-parse`,
//! `taxi-filter`, `taxi-zone-count`), and its wire encoding between them
//! (postcard).

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// Valid taxi zone ids (NYC TLC taxi zones).
pub const ZONES: std::ops::RangeInclusive<u16> = 1..=265;

/// One taxi trip, as produced by the host's generator (JSON) and passed
/// between the taxi plugins (postcard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// Unique trip id.
    pub trip_id: u64,
    /// Vendor (taxi company) id.
    pub vendor_id: u8,
    /// Pickup time, ms since the Unix epoch.
    pub pickup_ms: i64,
    /// Dropoff time, ms since the Unix epoch.
    pub dropoff_ms: i64,
    /// Number of passengers.
    pub passenger_count: u32,
    /// Distance in miles.
    pub trip_distance: f64,
    /// Pickup taxi zone, 1..=265.
    pub pickup_zone: u16,
    /// Dropoff taxi zone, 1..=265.
    pub dropoff_zone: u16,
    /// Pickup longitude.
    pub pickup_lon: f64,
    /// Pickup latitude.
    pub pickup_lat: f64,
    /// Dropoff longitude.
    pub dropoff_lon: f64,
    /// Dropoff latitude.
    pub dropoff_lat: f64,
    /// Metered fare in dollars.
    pub fare_amount: f64,
    /// Tip in dollars.
    pub tip_amount: f64,
    /// Total charged in dollars.
    pub total_amount: f64,
}

impl Trip {
    /// Encode with postcard (the encoding the taxi plugins exchange).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a Trip always encodes")
    }

    /// Decode from postcard bytes written by [`Trip::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Trip, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// A plausible sample trip, for tests.
    pub fn sample() -> Trip {
        Trip {
            trip_id: 1,
            vendor_id: 2,
            pickup_ms: 1_700_000_000_000,
            dropoff_ms: 1_700_000_900_000,
            passenger_count: 1,
            trip_distance: 2.5,
            pickup_zone: 161,
            dropoff_zone: 237,
            pickup_lon: -73.97,
            pickup_lat: 40.76,
            dropoff_lon: -73.96,
            dropoff_lat: 40.77,
            fare_amount: 14.5,
            tip_amount: 3.0,
            total_amount: 19.8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_round_trip() {
        let t = Trip::sample();
        assert_eq!(Trip::decode(&t.encode()).unwrap(), t);
    }
}
