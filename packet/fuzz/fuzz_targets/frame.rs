//! Parse, count, echo and reflect arbitrary frames; `packet::selfcheck` holds the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    packet::selfcheck::check_frame(frame);
});
