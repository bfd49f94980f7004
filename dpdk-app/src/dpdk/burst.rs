//! Bursts of owned packet buffers, and the bookkeeping around them.
//!
//! A [`Burst`] holds up to [`MAX_BURST`] buffers in `Option` slots. Its invariant, which the
//! FFI code in the parent module relies on when it hands the slots to `rte_eth_tx_burst`:
//! **`slots[..len]` are all `Some`**. Every safe method keeps it: nothing leaves a hole in
//! the middle. A packet leaves a burst only by value ([`Burst::take`], which closes the gap,
//! or [`Burst::drain_into`], which empties the whole burst), so a slot whose packet moved on
//! cannot be named any more: an index past the end gives `None`, never a freed buffer.
//! Buffers still in a burst are dropped (for an mbuf: freed to its pool) when the burst is
//! cleared, refilled or dropped.
//!
//! The bookkeeping is generic over [`PacketBuf`], so the unit tests below run it on plain heap
//! buffers, without EAL, and under Miri (`cargo +nightly miri test -p dpdk-app burst`).

/// The most buffers one burst holds.
pub const MAX_BURST: usize = 256;

/// A packet buffer a burst can own: an mbuf, or a heap buffer in tests.
pub trait PacketBuf {
    /// The packet's data room (its `len` bytes, then the tailroom) and its length.
    fn packet(&mut self) -> Packet<'_>;
    /// True for a chained buffer, of which [`PacketBuf::packet`] gives the first segment only.
    fn is_multi_segment(&self) -> bool;
    /// Sets the length after a rewrite. Returns false, and changes nothing, when `len` is
    /// longer than the data room or the buffer is chained.
    fn set_len(&mut self, len: usize) -> bool;
    /// Hints the CPU to load the buffer's metadata and first bytes (the headers) into cache:
    /// issued for the next packet while this one is handled. A hint only; no effect is
    /// required.
    fn prefetch(&self) {}
}

/// A packet of a burst: its data (room to grow included) and its length.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The whole data room from the packet's start: `len` bytes of packet, then tailroom.
    pub buf: &'a mut [u8],
    pub len: usize,
}

/// Up to [`MAX_BURST`] owned packet buffers; see the module docs for the invariant.
pub struct Burst<P> {
    slots: [Option<P>; MAX_BURST],
    len: usize,
}

impl<P> std::fmt::Debug for Burst<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl<P> Default for Burst<P> {
    fn default() -> Self {
        Burst {
            slots: [const { None }; MAX_BURST],
            len: 0,
        }
    }
}

impl<P> Burst<P> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops (frees) every packet.
    pub fn clear(&mut self) {
        let n = std::mem::take(&mut self.len);
        for slot in &mut self.slots[..n] {
            *slot = None;
        }
    }

    /// Appends `p`; gives it back when the burst is full.
    pub fn push(&mut self, p: P) -> Result<(), P> {
        match self.slots.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(p);
                self.len += 1;
                Ok(())
            }
            None => Err(p),
        }
    }

    /// Hands every packet, in order, to `keep`; the ones it keeps (returns true for) go to the
    /// end of `out`, the others are dropped (freed). The burst is empty afterwards. Returns how
    /// many kept packets were dropped because `out` was full.
    ///
    /// This is the poll loop's one pass over a burst: one look at each slot, no index.
    #[inline]
    pub fn drain_into(&mut self, out: &mut Burst<P>, mut keep: impl FnMut(&mut P) -> bool) -> usize
    where
        P: PacketBuf,
    {
        // Empty first: if `keep` panics, the burst is simply shorter (the packets not yet seen
        // stay in their slots, past `len`, and are dropped with the burst).
        let n = std::mem::take(&mut self.len);
        let mut overflow = 0;
        for i in 0..n {
            if let Some(Some(next)) = self.slots[..n].get(i + 1) {
                next.prefetch();
            }
            if let Some(mut p) = self.slots[i].take()
                && keep(&mut p)
                && out.push(p).is_err()
            {
                overflow += 1;
            }
        }
        overflow
    }

    /// Empties the burst and returns its slots (all `None`) for a receive function to fill.
    /// The parent module then records the count with [`Burst::set_filled`].
    pub(super) fn slots_for_fill(&mut self) -> &mut [Option<P>; MAX_BURST] {
        self.clear();
        &mut self.slots
    }

    /// Records that the first `n` slots were filled.
    ///
    /// # Safety
    /// `slots[..n]` are all `Some` and `n <= MAX_BURST` (the burst's invariant; the transmit
    /// path hands those slots to the driver as non-null pointers).
    pub(super) unsafe fn set_filled(&mut self, n: usize) {
        debug_assert!(n <= MAX_BURST && self.slots[..n].iter().all(Option::is_some));
        self.len = n;
    }

    /// Gives the packets (all `Some`, by the invariant) to `send`, which returns how many of
    /// them it took ownership of, from the front. Those are forgotten; the rest are dropped
    /// (freed). The burst is empty afterwards. Returns (sent, dropped).
    pub(super) fn submit(
        &mut self,
        send: impl FnOnce(&mut [Option<P>]) -> usize,
    ) -> (usize, usize) {
        let n = std::mem::take(&mut self.len);
        let slots = &mut self.slots[..n];
        let sent = send(slots).min(n);
        for slot in &mut slots[..sent] {
            // Owned by the driver now.
            std::mem::forget(slot.take());
        }
        for slot in &mut slots[sent..] {
            *slot = None;
        }
        (sent, n - sent)
    }
}

/// The index API: for callers that look at packets by position. The poll loop does not need
/// it (it drains), so only the tests use it today.
#[allow(dead_code)]
impl<P> Burst<P> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Packet `i`, if the burst holds that many.
    pub fn get(&self, i: usize) -> Option<&P> {
        self.slots[..self.len].get(i)?.as_ref()
    }

    /// Packet `i`, if the burst holds that many.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut P> {
        self.slots[..self.len].get_mut(i)?.as_mut()
    }

    /// Removes packet `i` and returns it; the packets after it move down one place (the burst
    /// stays without holes, so index `i` now names the next packet, or nothing).
    pub fn take(&mut self, i: usize) -> Option<P> {
        if i >= self.len {
            return None;
        }
        self.slots[i..self.len].rotate_left(1);
        self.len -= 1;
        self.slots[self.len].take()
    }

    /// Moves packet `i` to the end of `out`. Returns false, and moves nothing, when there is no
    /// packet `i` or `out` is full.
    pub fn move_to(&mut self, i: usize, out: &mut Burst<P>) -> bool {
        if i >= self.len || out.len >= MAX_BURST {
            return false;
        }
        let Some(p) = self.take(i) else {
            return false;
        };
        out.push(p).is_ok()
    }
}

#[cfg(test)]
mod tests {
    //! The burst bookkeeping on heap buffers that count their drops: no EAL, Miri-clean.
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A heap packet buffer; dropping it counts one "free" on a shared counter.
    struct HeapBuf {
        data: Vec<u8>,
        len: usize,
        id: u32,
        freed: Rc<Cell<u32>>,
        chained: bool,
    }

    impl Drop for HeapBuf {
        fn drop(&mut self) {
            self.freed.set(self.freed.get() + 1);
        }
    }

    impl PacketBuf for HeapBuf {
        fn packet(&mut self) -> Packet<'_> {
            Packet {
                buf: &mut self.data,
                len: self.len,
            }
        }
        fn is_multi_segment(&self) -> bool {
            self.chained
        }
        fn set_len(&mut self, len: usize) -> bool {
            if self.chained || len > self.data.len() {
                return false;
            }
            self.len = len;
            true
        }
    }

    fn buf(id: u32, freed: &Rc<Cell<u32>>) -> HeapBuf {
        HeapBuf {
            data: vec![id as u8; 64],
            len: 60,
            id,
            freed: Rc::clone(freed),
            chained: false,
        }
    }

    fn filled(n: u32, freed: &Rc<Cell<u32>>) -> Burst<HeapBuf> {
        let mut b = Burst::new();
        for i in 0..n {
            assert!(b.push(buf(i, freed)).is_ok());
        }
        b
    }

    fn ids(b: &Burst<HeapBuf>) -> Vec<u32> {
        (0..b.len()).map(|i| b.get(i).unwrap().id).collect()
    }

    #[test]
    fn a_moved_packet_cannot_be_read_through_its_old_index() {
        let freed = Rc::new(Cell::new(0));
        let mut rx = filled(3, &freed);
        let mut tx = Burst::new();
        assert!(rx.move_to(2, &mut tx));
        // Slot 2 was emptied: it is no longer part of the burst.
        assert!(rx.get(2).is_none());
        assert!(rx.get_mut(2).is_none());
        assert!(!rx.move_to(2, &mut tx), "a second move of the same slot");
        assert!(rx.take(2).is_none());
        assert_eq!(ids(&rx), [0, 1]);
        assert_eq!(ids(&tx), [2]);
        // From the middle: the later packets close the gap.
        assert!(rx.move_to(0, &mut tx));
        assert_eq!(ids(&rx), [1]);
        assert_eq!(ids(&tx), [2, 0]);
        assert_eq!(freed.get(), 0, "moving frees nothing");
        drop(rx);
        assert_eq!(freed.get(), 1);
        drop(tx);
        assert_eq!(freed.get(), 3, "every buffer freed exactly once");
    }

    #[test]
    fn drain_keeps_some_frees_the_rest_and_empties() {
        let freed = Rc::new(Cell::new(0));
        let mut rx = filled(5, &freed);
        let mut tx = Burst::new();
        let mut seen = Vec::new();
        let overflow = rx.drain_into(&mut tx, |p| {
            seen.push(p.id);
            p.id % 2 == 0
        });
        assert_eq!(overflow, 0);
        assert_eq!(seen, [0, 1, 2, 3, 4], "each packet seen once, in order");
        assert!(rx.is_empty());
        for i in 0..5 {
            assert!(rx.get(i).is_none(), "drained slot {i} readable");
        }
        assert_eq!(ids(&tx), [0, 2, 4]);
        assert_eq!(freed.get(), 2, "the packets not kept are freed at once");
        tx.clear();
        assert_eq!(freed.get(), 5);
        assert!(tx.is_empty() && tx.get(0).is_none());
    }

    #[test]
    fn a_full_burst_refuses_and_counts_the_overflow() {
        let freed = Rc::new(Cell::new(0));
        let mut full = filled(MAX_BURST as u32, &freed);
        let back = full.push(buf(999, &freed)).unwrap_err();
        assert_eq!(back.id, 999);
        drop(back);
        let mut rx = filled(3, &freed);
        assert!(!rx.move_to(0, &mut full), "no room: the packet stays");
        assert_eq!(ids(&rx), [0, 1, 2]);
        assert_eq!(rx.drain_into(&mut full, |_| true), 3);
        assert_eq!(freed.get(), 4, "the refused packets are freed, not leaked");
        drop(full);
        assert_eq!(freed.get(), 4 + MAX_BURST as u32);
    }

    #[test]
    fn submit_forgets_what_was_sent_and_frees_the_rest() {
        let freed = Rc::new(Cell::new(0));
        let mut tx = filled(4, &freed);
        let mut taken = Vec::new();
        let (sent, dropped) = tx.submit(|slots| {
            assert!(slots.iter().all(Option::is_some), "no holes handed out");
            // A "driver" that takes ownership of the first two.
            taken.extend(slots[..2].iter_mut().map(|s| s.take().unwrap()));
            2
        });
        assert_eq!((sent, dropped), (2, 2));
        assert!(tx.is_empty() && tx.get(0).is_none());
        assert_eq!(freed.get(), 2, "the unsent ones are freed by us");
        assert_eq!(taken.iter().map(|p| p.id).collect::<Vec<_>>(), [0, 1]);
        drop(taken);
        assert_eq!(freed.get(), 4, "the sent ones only by their new owner");
        // A driver that claims more than it was given cannot make us forget more.
        let mut tx = filled(1, &freed);
        let (sent, dropped) = tx.submit(|slots| {
            drop(slots[0].take());
            7
        });
        assert_eq!((sent, dropped), (1, 0));
        assert_eq!(freed.get(), 5);
    }

    #[test]
    fn fill_and_set_len() {
        let freed = Rc::new(Cell::new(0));
        let mut b = filled(2, &freed);
        let slots = b.slots_for_fill();
        assert_eq!(freed.get(), 2, "refilling frees what was left");
        assert!(slots.iter().all(Option::is_none));
        slots[0] = Some(buf(7, &freed));
        // SAFETY: slot 0 was just filled.
        unsafe { b.set_filled(1) };
        assert_eq!(ids(&b), [7]);
        let p = b.get_mut(0).unwrap();
        assert_eq!(p.packet().buf.len(), 64);
        assert!(p.set_len(64));
        assert!(!p.set_len(65), "beyond the data room");
        assert_eq!(p.packet().len, 64);
        p.chained = true;
        assert!(!p.set_len(10), "a chained buffer keeps its length");
        assert!(p.is_multi_segment());
    }

    #[test]
    fn a_panicking_keep_leaves_no_hole() {
        let freed = Rc::new(Cell::new(0));
        let mut rx = filled(4, &freed);
        let mut tx = Burst::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rx.drain_into(&mut tx, |p| {
                assert!(p.id < 2, "boom");
                true
            })
        }));
        assert!(r.is_err());
        assert!(rx.is_empty() && rx.get(0).is_none());
        assert_eq!(ids(&tx), [0, 1]);
        drop(rx);
        drop(tx);
        assert_eq!(freed.get(), 4, "nothing leaked or freed twice");
    }
}
