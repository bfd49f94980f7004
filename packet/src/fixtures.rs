//! Real frames, captured from the Linux stack on a veth pair between two network namespaces
//! (198.18.0.1 / 2001:db8::1 at 02:00:00:00:00:01, 198.18.0.2 / 2001:db8::2 at 02:00:00:00:00:02),
//! and the replies the echo responder must produce, computed by an independent implementation
//! (a short Python script with its own checksum code). Tests, benchmarks and the fuzz corpus
//! share them.

/// Decodes a hex string at compile time; a bad digit or length fails the build.
const fn hex<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() == 2 * N, "hex fixture length");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex digit in fixture"),
    }
}

/// The MAC address of the answering side in these captures.
pub const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Its IPv4 address.
pub const LOCAL_IPV4: [u8; 4] = [198, 18, 0, 2];
/// Its IPv6 address.
pub const LOCAL_IPV6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// ARP who-has 198.18.0.2 tell 198.18.0.1 (42 bytes: veth does not pad).
pub const ARP_REQUEST: [u8; 42] = hex(concat!(
    "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c612",
    "0002",
));

/// The reply from 02:00:00:00:00:02 for 198.18.0.2, as the responder must build it.
pub const ARP_REPLY: [u8; 42] = hex(concat!(
    "02000000000102000000000208060001080006040002020000000002c6120002020000000001c612",
    "0001",
));

/// `ping 198.18.0.2`: ICMP echo request, id 0x2212, seq 1, 56 bytes of ping's payload.
pub const ICMPV4_ECHO_REQUEST: [u8; 98] = hex(concat!(
    "020000000002020000000001080045000054ad5a400040010127c6120001c61200020800896d2212",
    "0001ef2f026b000000008e110e0000000000101112131415161718191a1b1c1d1e1f202122232425",
    "262728292a2b2c2d2e2f3031323334353637",
));

/// The same request with TTL 5 (header checksum recomputed), so a reply must patch TTL.
pub const ICMPV4_ECHO_REQUEST_TTL5: [u8; 98] = hex(concat!(
    "020000000002020000000001080045000054ad5a400005013c27c6120001c61200020800896d2212",
    "0001ef2f026b000000008e110e0000000000101112131415161718191a1b1c1d1e1f202122232425",
    "262728292a2b2c2d2e2f3031323334353637",
));

/// The expected reply to the TTL 5 request: TTL 64, addresses and MACs swapped, type 0.
pub const ICMPV4_ECHO_REPLY_TTL5: [u8; 98] = hex(concat!(
    "020000000001020000000002080045000054ad5a400040010127c6120002c61200010000916d2212",
    "0001ef2f026b000000008e110e0000000000101112131415161718191a1b1c1d1e1f202122232425",
    "262728292a2b2c2d2e2f3031323334353637",
));

/// `ping -6 2001:db8::2`: ICMPv6 echo request with a non-zero flow label.
pub const ICMPV6_ECHO_REQUEST: [u8; 118] = hex(concat!(
    "02000000000202000000000186dd600f271d00403a4020010db80000000000000000000000012001",
    "0db80000000000000000000000028000326422130001ef2f026b00000000112a0e00000000001011",
    "12131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
));

/// The expected reply to it.
pub const ICMPV6_ECHO_REPLY: [u8; 118] = hex(concat!(
    "02000000000102000000000286dd600f271d00403a4020010db80000000000000000000000022001",
    "0db80000000000000000000000018100316422130001ef2f026b00000000112a0e00000000001011",
    "12131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
));

/// A UDP socket's `hello, echo` from 198.18.0.1:40000 to port 7 (checksum completed: veth leaves it partial).
pub const UDP4_ECHO_REQUEST: [u8; 53] = hex(concat!(
    "0200000000020200000000010800450000271e47400040119057c6120001c61200029c4000070013",
    "a08c68656c6c6f2c206563686f",
));

/// The expected reply to it.
pub const UDP4_ECHO_REPLY: [u8; 53] = hex(concat!(
    "0200000000010200000000020800450000271e47400040119057c6120002c612000100079c400013",
    "a08c68656c6c6f2c206563686f",
));

/// `hello, echo v6` from `[2001:db8::1]:40001` to port 7 (checksum completed).
pub const UDP6_ECHO_REQUEST: [u8; 76] = hex(concat!(
    "02000000000202000000000186dd600dbe730016114020010db80000000000000000000000012001",
    "0db80000000000000000000000029c41000700165ae268656c6c6f2c206563686f207636",
));

/// The expected reply to it.
pub const UDP6_ECHO_REPLY: [u8; 76] = hex(concat!(
    "02000000000102000000000286dd600dbe730016114020010db80000000000000000000000022001",
    "0db800000000000000000000000100079c4100165ae268656c6c6f2c206563686f207636",
));

/// Neighbour solicitation for 2001:db8::2 from 2001:db8::1 to ff02::1:ff00:2 with a source link-layer option.
pub const NEIGHBOR_SOLICITATION: [u8; 86] = hex(concat!(
    "3333ff00000202000000000186dd6000000000203aff20010db8000000000000000000000001ff02",
    "00000000000000000001ff00000287001c270000000020010db80000000000000000000000020101",
    "020000000001",
));

/// The expected advertisement from 02:00:00:00:00:02 (solicited, override, target link-layer option).
pub const NEIGHBOR_ADVERTISEMENT: [u8; 86] = hex(concat!(
    "02000000000102000000000286dd6000000000203aff20010db80000000000000000000000022001",
    "0db800000000000000000000000188008a716000000020010db80000000000000000000000020201",
    "020000000002",
));

/// A TCP SYN with MSS, SACK, timestamps and window scale options, 198.18.0.1 to port 80 (checksum completed).
pub const TCP_SYN: [u8; 74] = hex(concat!(
    "02000000000202000000000108004500003cd1ae40004006dce5c6120001c6120002caf00050a680",
    "716d00000000a002faf0f57b0000020405b40402080a0666e1d3000000000103030a",
));

/// An MLDv2 report: IPv6 with a hop-by-hop extension header (router alert) before ICMPv6.
pub const MLD_REPORT: [u8; 90] = hex(concat!(
    "33330000001602000000000186dd6000000000240001fe80000000000000000000fffe000001ff02",
    "00000000000000000000000000163a000502000001008f0072070000000104000000ff0200000000",
    "000000000001ff000001",
));

/// A router solicitation from a link-local address to ff02::2.
pub const ROUTER_SOLICITATION: [u8; 70] = hex(concat!(
    "33330000000202000000000186dd6000000000103afffe80000000000000000000fffe000001ff02",
    "000000000000000000000000000285007b2c000000000101020000000001",
));

/// Every request frame above, for benchmarks and the fuzz corpus.
pub const REQUESTS: &[&[u8]] = &[
    &ARP_REQUEST,
    &ICMPV4_ECHO_REQUEST,
    &ICMPV4_ECHO_REQUEST_TTL5,
    &ICMPV6_ECHO_REQUEST,
    &UDP4_ECHO_REQUEST,
    &UDP6_ECHO_REQUEST,
    &NEIGHBOR_SOLICITATION,
    &TCP_SYN,
    &MLD_REPORT,
    &ROUTER_SOLICITATION,
];
