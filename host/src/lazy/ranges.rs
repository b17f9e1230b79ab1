//! Sets of page ranges, each with where its bytes are in which pages image:
//! what a lazy process still needs, kept true while the program moves and
//! drops its memory. Pure, so the bookkeeping is tested without a kernel.

/// `[start, end)` of a process's memory, whose first byte is at `offset`
/// in its pages image `file` (an index into the process's images: an
/// iterative dump's pages lie in its own and its parents').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file: u32,
}

impl Range {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The part of `self` inside `[lo, hi)`, with its offset moved along.
    fn clip(&self, lo: u64, hi: u64) -> Option<Range> {
        let (s, e) = (self.start.max(lo), self.end.min(hi));
        (s < e).then(|| Range { start: s, end: e, offset: self.offset + (s - self.start), ..*self })
    }
}

/// Disjoint ranges, sorted by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<Range>);

impl RangeSet {
    /// From ranges that do not overlap, in any order.
    pub fn new(mut ranges: Vec<Range>) -> RangeSet {
        ranges.retain(|r| r.start < r.end);
        ranges.sort_by_key(|r| r.start);
        RangeSet(ranges)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.0.iter().map(Range::len).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Range> {
        self.0.iter()
    }

    /// Drops everything in `[lo, hi)`, cutting ranges that cross its edges.
    pub fn remove(&mut self, lo: u64, hi: u64) {
        if lo >= hi {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for r in &self.0 {
            if r.end <= lo || r.start >= hi {
                out.push(*r);
                continue;
            }
            out.extend(r.clip(r.start, lo));
            out.extend(r.clip(hi, r.end));
        }
        self.0 = out;
    }

    /// Takes out and returns up to `max` bytes from the range holding
    /// `addr`, starting there; `None` when no range holds it.
    pub fn take_at(&mut self, addr: u64, max: u64) -> Option<Range> {
        let i = self.0.partition_point(|r| r.end <= addr);
        let r = self.0.get(i).filter(|r| r.start <= addr)?;
        let taken = r.clip(addr, addr.saturating_add(max))?;
        self.remove(taken.start, taken.end);
        Some(taken)
    }

    /// Takes out and returns up to `max` bytes from the front.
    pub fn take_first(&mut self, max: u64) -> Option<Range> {
        let start = self.0.first()?.start;
        self.take_at(start, max)
    }

    /// Puts `r` back (a copy that has to wait), over whatever it overlaps.
    pub fn insert(&mut self, r: Range) {
        self.remove(r.start, r.end);
        if r.start < r.end {
            let i = self.0.partition_point(|x| x.start < r.start);
            self.0.insert(i, r);
        }
    }

    /// What `mremap` did: everything in `[from, from + len)` now lives at
    /// `to` (and nothing that was at `to` before is left there).
    pub fn moved(&mut self, from: u64, to: u64, len: u64) {
        let Some(end) = from.checked_add(len) else { return };
        let carried: Vec<Range> = self.0.iter().filter_map(|r| r.clip(from, end)).collect();
        self.remove(from, end);
        self.remove(to, to.saturating_add(len));
        self.0.extend(carried.into_iter().map(|r| Range { start: r.start - from + to, end: r.end - from + to, ..r }));
        self.0.sort_by_key(|r| r.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64, offset: u64) -> Range {
        Range { start, end, offset, file: 0 }
    }

    #[test]
    fn removing_cuts_ranges_and_keeps_offsets_with_their_bytes() {
        let mut s = RangeSet::new(vec![r(0x5000, 0x9000, 0x10000), r(0x1000, 0x3000, 0)]);
        s.remove(0x2000, 0x6000);
        assert_eq!(s, RangeSet::new(vec![r(0x1000, 0x2000, 0), r(0x6000, 0x9000, 0x11000)]));
        s.remove(0x7000, 0x8000);
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            [r(0x1000, 0x2000, 0), r(0x6000, 0x7000, 0x11000), r(0x8000, 0x9000, 0x13000)]
        );
        assert_eq!(s.bytes(), 0x3000);
    }

    #[test]
    fn taking_at_an_address_starts_there_and_stays_in_its_range() {
        let mut s = RangeSet::new(vec![r(0x1000, 0x5000, 0x2000), r(0x5000, 0x6000, 0x100000)]);
        assert_eq!(s.take_at(0x3000, 0x10000), Some(r(0x3000, 0x5000, 0x4000)));
        assert_eq!(s.take_at(0x3000, 0x1000), None, "already taken");
        assert_eq!(s.take_at(0x8000, 0x1000), None, "a hole");
        assert_eq!(s.take_first(0x1000), Some(r(0x1000, 0x2000, 0x2000)));
        assert_eq!(s.take_first(0x10000), Some(r(0x2000, 0x3000, 0x3000)));
        assert_eq!(s.take_first(0x10000), Some(r(0x5000, 0x6000, 0x100000)));
        assert!(s.take_first(1).is_none() && s.is_empty());
    }

    #[test]
    fn a_move_carries_bytes_and_clears_what_it_lands_on() {
        let mut s = RangeSet::new(vec![r(0x1000, 0x4000, 0), r(0x10000, 0x12000, 0x9000)]);
        s.moved(0x2000, 0x11000, 0x2000);
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            [r(0x1000, 0x2000, 0), r(0x10000, 0x11000, 0x9000), r(0x11000, 0x13000, 0x1000),]
        );
        s.moved(u64::MAX - 1, 0, 2);
        assert_eq!(s.bytes(), 0x4000);
    }
}
