//! Damaged log directories never panic `Wal::open` in any recovery mode; the result is a
//! prefix of the log or a corruption error, and `Salvage` never drops a valid frame. Body:
//! `groupwal::testing::fuzz::recover_dir`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| groupwal::testing::fuzz::recover_dir(data));
