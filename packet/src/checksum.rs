//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Every checksum in the headers we touch (IPv4 header, UDP, TCP, ICMP, ICMPv6) is the one's
//! complement of the one's complement sum of 16-bit big-endian words. The echo responder never
//! recomputes one from scratch on the fast path: it changes a few words and applies
//! [`update_word`] for each, which is exact (RFC 1624, eqn. 3) and costs a handful of
//! instructions regardless of the payload length. The full computation here is what the tests and
//! the naive baseline use to prove the incremental path right.

/// Adds `data` to a running one's complement sum, as 16-bit big-endian words.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 requires. The result is not
/// folded; pass it to [`fold`] before use.
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    // Eight bytes at a time: 4 words per iteration, with no carry handling until the end (a u64
    // cannot overflow from adding 32-bit quantities for any frame size we will ever see).
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let hi = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        let lo = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
        acc += u64::from(hi) + u64::from(lo);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a running sum to 16 bits (end-around carry).
#[inline]
pub fn fold(acc: u64) -> u16 {
    // Fold 64 -> 32 -> 16 bits with end-around carries; four steps cover any u64.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for `data`: `!fold(sum(0, data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The IPv4 pseudo-header sum for UDP/TCP (RFC 768 / RFC 793).
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, l4_len: u16) -> u64 {
    // Each address as one 32-bit word: the same sum as `sum` over 16-bit words, once folded.
    u64::from(u32::from_be_bytes(*src))
        + u64::from(u32::from_be_bytes(*dst))
        + u64::from(protocol)
        + u64::from(l4_len)
}

/// The IPv6 pseudo-header sum for UDP/TCP/ICMPv6 (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u64 {
    // Two 64-bit halves per address, each split into 32-bit words: straight-line code.
    let words = |a: &[u8; 16]| {
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        (hi >> 32) + (hi & 0xffff_ffff) + (lo >> 32) + (lo & 0xffff_ffff)
    };
    words(src) + words(dst) + u64::from(next_header) + u64::from(l4_len)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changes from
/// `old` to `new`. `HC' = ~(~HC + ~m + m')`.
///
/// Using eqn. 3 (not eqn. 2 of RFC 1141) matters: it agrees with a full recomputation for
/// every input but one, which the tests check: when the covered data becomes all zeros, the
/// full checksum is 0xffff and this gives 0x0000. With a pseudo-header (UDP, TCP, ICMPv6) or
/// in an IPv4 header that cannot happen; an ICMPv4 echo reply handles it itself.
#[inline]
pub fn update_word(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    // Two folds are enough for the sum of three 16-bit values.
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// `fold(sum) == 0xffff`, computed as divisibility: folding keeps a sum's value modulo 0xffff
/// and gives 0 only for 0, so a non-zero multiple of 0xffff is exactly what folds to 0xffff.
/// The compiler makes the test one multiply and a compare, where `fold` is a chain of four
/// dependent steps.
#[inline(always)]
pub fn folds_to_all_ones(sum: u64) -> bool {
    sum != 0 && sum.is_multiple_of(0xffff)
}

/// True when `data`, checksum field included, sums to 0xffff (a valid checksum).
#[inline]
pub fn verify(acc: u64, data: &[u8]) -> bool {
    fold(sum(acc, data)) == 0xffff
}

/// True when an IPv4 header (20 to 60 bytes) carries a valid checksum. The header length is a
/// multiple of 4, so it sums 32-bit words: a few instructions for the common 20 bytes.
#[inline(always)]
pub fn verify_header(header: &[u8]) -> bool {
    if let Ok(h) = <&[u8; 20]>::try_from(header) {
        // No options (nearly every packet): straight-line code, no loop.
        let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        return folds_to_all_ones(w(0) + w(4) + w(8) + w(12) + w(16));
    }
    let words = header.chunks_exact(4);
    let tail = words.remainder();
    let mut acc: u64 = 0;
    for w in words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    fold(sum(acc, tail)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The IPv4 header from RFC 1071's well-known example (Wikipedia's "IPv4 header checksum").
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn known_ipv4_header_checksum() {
        let mut h = IPV4_HEADER;
        assert!(verify(0, &h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn header_verification_agrees_with_generic_sum() {
        assert!(verify_header(&IPV4_HEADER));
        for i in 0..20 {
            let mut h = IPV4_HEADER;
            h[i] ^= 0x10;
            assert_eq!(verify_header(&h), verify(0, &h));
            assert!(!verify_header(&h));
        }
    }

    #[test]
    fn fold_handles_every_carry() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x1_fffe), 0xffff);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(0, &[])), 0);
    }

    #[test]
    fn rfc1624_corner_case() {
        // RFC 1624 section 3: the other header words sum to 0xcd7a and a field changes from
        // 0x5555 to 0x3285. HC = ~(0xcd7a + 0x5555) = 0xdd2f; the right answer is 0x0000, which
        // eqn. 3 gives (eqn. 2 of RFC 1141 gives 0xffff).
        let hc = !fold(0xcd7a + 0x5555);
        assert_eq!(hc, 0xdd2f);
        assert_eq!(update_word(hc, 0x5555, 0x3285), 0x0000);
    }

    /// The straight-line pseudo-header sums agree with the generic word-by-word sum.
    #[test]
    fn pseudo_headers_equal_the_generic_sum() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = [0u8; 32];
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let s4: [u8; 4] = bytes[..4].try_into().unwrap();
            let d4: [u8; 4] = bytes[4..8].try_into().unwrap();
            let s6: [u8; 16] = bytes[..16].try_into().unwrap();
            let d6: [u8; 16] = bytes[16..].try_into().unwrap();
            let len = x as u16;
            assert_eq!(
                fold(pseudo_header_v4(&s4, &d4, 17, len)),
                fold(sum(sum(0, &s4), &d4) + 17 + u64::from(len))
            );
            assert_eq!(
                fold(pseudo_header_v6(&s6, &d6, 58, u32::from(len))),
                fold(sum(sum(0, &s6), &d6) + 58 + u64::from(len))
            );
        }
    }

    proptest! {
        /// Changing any one word and updating incrementally equals recomputing from scratch,
        /// as long as the original checksum was the valid one for the data, except when the
        /// data becomes all zeros: then the update gives 0x0000 and the full sum 0xffff.
        #[test]
        fn incremental_equals_full(data in proptest::collection::vec(any::<u8>(), 2..200),
                                   word in any::<prop::sample::Index>(),
                                   new in any::<u16>()) {
            let mut data = data;
            if data.len() % 2 == 1 { data.push(0); }
            let before = checksum(&data);
            let i = word.index(data.len() / 2) * 2;
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            if data.iter().all(|&b| b == 0) {
                prop_assert_eq!((update_word(before, old, new), after), (0x0000, 0xffff));
            } else {
                prop_assert_eq!(update_word(before, old, new), after);
            }
        }

        /// Divisibility by 0xffff agrees with folding, for any sum (and for the sums of
        /// headers, valid ones included).
        #[test]
        fn divisibility_agrees_with_folding(x in any::<u64>(), k in 0u64..0x1_0000_0000,
                                            header in proptest::collection::vec(any::<u8>(), 20)) {
            prop_assert_eq!(folds_to_all_ones(x), fold(x) == 0xffff);
            prop_assert_eq!(folds_to_all_ones(k * 0xffff), fold(k * 0xffff) == 0xffff);
            let mut h = header;
            h[10] = 0;
            h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(verify_header(&h), verify(0, &h));
        }

        /// The 8-byte fast loop agrees with a word-at-a-time reference.
        #[test]
        fn sum_matches_wordwise(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut reference: u64 = 0;
            for pair in data.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).copied().map(u64::from).unwrap_or(0);
                reference += hi | lo;
            }
            prop_assert_eq!(fold(sum(0, &data)), fold(reference));
        }
    }
}
