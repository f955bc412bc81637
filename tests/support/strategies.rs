//! proptest strategies shared by the key-value tests (`tests/kv.rs` and
//! `tests/kv_crash.rs`, through `#[path]`).
#![allow(dead_code)]

use groupwal::Durability;
use proptest::prelude::*;
use std::ops::Range;

/// Any durability: `Sync`, `Flush` or `Buffer`, alike.
pub fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Sync),
        Just(Durability::Flush),
        Just(Durability::Buffer)
    ]
}

/// A value length, alike from `0..13`, `medium` and `large`.
pub fn value_len(medium: Range<usize>, large: Range<usize>) -> impl Strategy<Value = usize> {
    prop_oneof![0..13usize, medium, large]
}
