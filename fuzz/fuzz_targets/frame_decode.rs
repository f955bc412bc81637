//! Arbitrary bytes never panic the frame or header decoder; an accepted frame re-encodes to
//! the same bytes. Body: `groupwal::testing::fuzz::frame_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| groupwal::testing::fuzz::frame_decode(data));
