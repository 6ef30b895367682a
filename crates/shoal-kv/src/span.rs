//! etcd's `key`/`range_end` pair as a key interval.

use std::ops::Bound;

/// The keys a `(key, range_end)` pair selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Span<'a> {
    /// `range_end` empty: just `key`.
    One(&'a [u8]),
    /// `range_end == [0]`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`; empty if `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

/// Bounds for `BTreeMap::range` over `[u8]` keys.
pub(crate) type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

impl<'a> Span<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => Span::One(key),
            [0] => Span::From(key),
            end => Span::Between(key, end),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            Span::One(key) => k == key,
            Span::From(key) => k >= key,
            Span::Between(key, end) => k >= key && k < end,
        }
    }

    /// Bounds for a map range; `None` when the span is empty (a map range would panic).
    pub(crate) fn bounds(&self) -> Option<Bounds<'a>> {
        match *self {
            Span::One(key) => Some((Bound::Included(key), Bound::Included(key))),
            Span::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            Span::Between(key, end) if key < end => Some((Bound::Included(key), Bound::Excluded(end))),
            Span::Between(..) => None,
        }
    }
}
