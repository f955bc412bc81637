//! Arbitrary operation sequences with crashes and faults on the simulated storage, checked
//! against the model. Body: `groupwal::testing::fuzz::sim_model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| groupwal::testing::fuzz::sim_model(data));
