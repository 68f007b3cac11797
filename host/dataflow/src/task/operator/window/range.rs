//! [`Window`]: the `[start, end)` range of a window, its order-preserving
//! encoding in state keys and its timer namespaces.

use sluice_runtime::wit;

/// A window `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl Window {
    pub(super) fn last(self) -> i64 {
        self.end.saturating_sub(1)
    }

    pub(super) fn intersects(self, other: Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub(super) fn cover(self, other: Window) -> Window {
        Window {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub(super) fn encode(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&((self.start as u64) ^ (1 << 63)).to_be_bytes());
        b[8..].copy_from_slice(&((self.end as u64) ^ (1 << 63)).to_be_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<Window> {
        let start = (u64::from_be_bytes(b.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
        let end = (u64::from_be_bytes(b.get(8..16)?.try_into().ok()?) ^ (1 << 63)) as i64;
        Some(Window { start, end })
    }

    pub(super) fn namespace(self, tag: u8) -> Box<[u8]> {
        let mut ns = Vec::with_capacity(17);
        ns.push(tag);
        ns.extend_from_slice(&self.encode());
        ns.into()
    }

    pub(super) fn to_wit(self) -> wit::Window {
        wit::Window {
            start: self.start,
            end: self.end,
        }
    }
}
