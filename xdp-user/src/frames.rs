//! Frame ownership by identity: where every UMEM frame of a queue is.
//!
//! Every frame is owned by exactly one place at a time (see `afxdp`'s module docs). Counting
//! ring occupancy cannot prove that: frames the kernel legitimately keeps (in the driver's RX
//! ring in zero-copy mode, or in its free pool after an `rx_ring_full` drop) look "missing", and
//! a frame that is owned twice (the dangerous case: two packets in one buffer) balances out.
//! The ledger instead keeps one byte per frame, its [`Place`], and every ring step moves frames
//! between places checking where they come from: a frame the kernel hands back that was not
//! lent to it, or an address outside the UMEM, is a violation and is counted. At exit every
//! frame is in exactly one place by construction, and the places say who holds it.
//!
//! The ledger is plain Rust over frame addresses, so its rules are unit-tested without a
//! socket; the cost on the hot path is one byte read and one write per frame per step.

/// Where a frame is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the loop's free list.
    Free = 0,
    /// Lent to the kernel for receiving: in the fill ring, the driver (zero-copy), the
    /// kernel's free pool, or received into the RX ring and not yet consumed.
    Fill = 1,
    /// Consumed from the RX ring: the loop is deciding it.
    Loop = 2,
    /// Lent to the kernel for sending: in the TX ring, being sent, or completed and not yet
    /// consumed from the completion ring.
    Tx = 3,
}

const PLACES: usize = 4;

/// Where a queue's frames were when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameAccount {
    pub total: u64,
    /// On the loop's free list.
    pub free: u64,
    /// Held by the kernel for receiving (fill ring, driver, its pool). Legitimate.
    pub kernel_fill: u64,
    /// Of those, how many sit in the fill ring itself (the rest: driver or kernel pool).
    pub fill_ring: u64,
    /// Held by the kernel for sending (not completed when the queue stopped). Legitimate.
    pub kernel_tx: u64,
    /// Still in the loop's hands: must be 0 after the loop ends.
    pub in_loop: u64,
    /// Frames handed back by the kernel that were not lent to it (a frame owned twice), or
    /// addresses outside the UMEM: must be 0.
    pub violations: u64,
}

impl FrameAccount {
    /// Frames whose ownership went wrong: must be 0.
    pub fn lost(&self) -> u64 {
        self.in_loop + self.violations
    }
}

/// One place per frame, indexed by `address / frame_size`.
#[derive(Debug)]
pub struct FrameLedger {
    frame_size: usize,
    places: Vec<Place>,
    counts: [u64; PLACES],
    violations: u64,
}

impl FrameLedger {
    /// `frames` frames of `frame_size` bytes, all on the free list.
    pub fn new(frames: usize, frame_size: usize) -> FrameLedger {
        let mut counts = [0; PLACES];
        counts[Place::Free as usize] = frames as u64;
        FrameLedger {
            frame_size: frame_size.max(1),
            places: vec![Place::Free; frames],
            counts,
            violations: 0,
        }
    }

    /// Moves the frame at `addr` (any address inside it: RX descriptors carry the headroom
    /// offset) from `from` to `to`. A frame found anywhere else is a violation: it is counted
    /// and left where it was, so one bad descriptor cannot corrupt the books of another frame.
    #[inline]
    pub fn moved(&mut self, addr: usize, from: Place, to: Place) {
        match self.places.get_mut(addr / self.frame_size) {
            Some(place) if *place == from => {
                *place = to;
                self.counts[from as usize] -= 1;
                self.counts[to as usize] += 1;
            }
            _ => self.violations += 1,
        }
    }

    pub fn count(&self, place: Place) -> u64 {
        self.counts[place as usize]
    }

    #[cfg(test)]
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// The account, given how many descriptors the fill ring itself holds.
    pub fn account(&self, fill_ring: u64) -> FrameAccount {
        FrameAccount {
            total: self.places.len() as u64,
            free: self.count(Place::Free),
            kernel_fill: self.count(Place::Fill),
            fill_ring: fill_ring.min(self.count(Place::Fill)),
            kernel_tx: self.count(Place::Tx),
            in_loop: self.count(Place::Loop),
            violations: self.violations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 2048;

    #[test]
    fn a_frame_goes_round_and_every_place_is_counted() {
        let mut l = FrameLedger::new(4, SIZE);
        l.moved(0, Place::Free, Place::Fill);
        l.moved(SIZE, Place::Free, Place::Fill);
        // RX descriptors carry the headroom offset inside the frame.
        l.moved(SIZE + 256, Place::Fill, Place::Loop);
        l.moved(SIZE, Place::Loop, Place::Tx);
        let a = l.account(1);
        assert_eq!(
            (a.free, a.kernel_fill, a.kernel_tx, a.in_loop, a.violations),
            (2, 1, 1, 0, 0)
        );
        assert_eq!(a.free + a.kernel_fill + a.kernel_tx + a.in_loop, a.total);
        l.moved(SIZE, Place::Tx, Place::Free);
        assert_eq!(l.count(Place::Free), 3);
        assert_eq!(l.account(0).lost(), 0);
    }

    #[test]
    fn a_frame_handed_back_twice_is_caught() {
        let mut l = FrameLedger::new(2, SIZE);
        l.moved(0, Place::Free, Place::Fill);
        l.moved(0, Place::Fill, Place::Loop);
        // The kernel hands the same frame back again: it was not lent to it any more.
        l.moved(0, Place::Fill, Place::Loop);
        assert_eq!(l.violations(), 1);
        // A completion for a frame never sent.
        l.moved(SIZE, Place::Tx, Place::Free);
        assert_eq!(l.violations(), 2);
        // The books of the frames themselves are unchanged.
        assert_eq!((l.count(Place::Loop), l.count(Place::Free)), (1, 1));
        assert_eq!(l.account(0).lost(), 1 + 2);
    }

    #[test]
    fn addresses_outside_the_umem_are_violations_not_panics() {
        let mut l = FrameLedger::new(2, SIZE);
        l.moved(2 * SIZE, Place::Fill, Place::Loop);
        l.moved(usize::MAX, Place::Tx, Place::Free);
        assert_eq!(l.violations(), 2);
        assert_eq!(l.count(Place::Free), 2);
    }

    #[test]
    fn frames_the_kernel_holds_are_not_lost() {
        // Zero-copy: the driver keeps frames from the fill ring in its own RX ring.
        let mut l = FrameLedger::new(8, SIZE);
        for i in 0..8 {
            l.moved(i * SIZE, Place::Free, Place::Fill);
        }
        let a = l.account(3);
        assert_eq!((a.kernel_fill, a.fill_ring, a.lost()), (8, 3, 0));
    }
}
