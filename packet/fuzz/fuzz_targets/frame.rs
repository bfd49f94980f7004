//! Parse, classify, count, echo and reflect arbitrary frames; `packet::selfcheck` holds the
//! invariants (`classify` agreeing with `parse` among them).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    packet::selfcheck::check_frame(frame);
    // Never panics, whatever the bytes (also checked inside `check_frame`; called here so the
    // fuzzer's coverage sees the classifier directly).
    std::hint::black_box(packet::filter::classify(frame));
});
