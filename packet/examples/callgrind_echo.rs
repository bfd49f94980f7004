//! One million echo decisions + rewrites of a 60-byte UDP frame, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/callgrind_echo` (repeatable, unlike time
//! on a shared VM).
use packet::echo::{Responder, Verdict};
use std::hint::black_box;

fn main() {
    let f = packet::fixtures::UDP4_ECHO_REQUEST;
    let r = Responder::new();
    let mut buf = [0u8; 2048];
    let mut replies = 0u64;
    for _ in 0..1_000_000 {
        buf[..f.len()].copy_from_slice(black_box(&f));
        if let Verdict::Reply { .. } = r.respond(black_box(&mut buf), f.len()) {
            replies += 1;
        }
    }
    println!("{replies}");
}
