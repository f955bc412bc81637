//! Model-based property tests on the simulated storage: random sequences of appends (every
//! durability mode), batches, submits, syncs, reads, truncations, crashes (clean and torn
//! power loss, process kill), injected faults, space budgets and reopens, each checked
//! against a model by `groupwal::testing::run_ops` (see its docs and `docs/TESTING.md` for
//! the properties). Also: the seeded runs the soak makes, the fuzz targets' bodies over their
//! seed corpora and committed regression inputs, and the operation codec.
//!
//! `PROPTEST_CASES=2000 cargo test --features sim --test sim_model` runs more cases.

use groupwal::io::sim::FaultKind;
use groupwal::testing::fuzz::{run_target, seed_corpus, TARGETS};
use groupwal::testing::{
    ops_from_bytes, ops_to_bytes, random_ops, run_ops, CrashKind, Op, RunConfig, FAULT_KINDS,
};
use groupwal::Durability;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::path::Path;

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        4 => Just(Durability::Sync),
        3 => Just(Durability::Flush),
        3 => Just(Durability::Buffer),
    ]
}

/// Payload lengths: mostly small, some up to the limit, a few at it or one above it.
fn len(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0..=64u32,
        4 => 0..=max,
        1 => max - 2..=max + 1,
    ]
}

fn op(max: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (len(max), durability(), any::<bool>()).prop_map(|(len, durability, with_id)| {
            Op::Append { len, durability, with_id }
        }),
        8 => (0..=15u8, len(max), durability(), any::<bool>()).prop_map(
            move |(count, len, durability, one_invalid)| Op::AppendMany {
                count,
                len: len.min(max),
                durability,
                one_invalid,
            }
        ),
        4 => (len(max), durability()).prop_map(|(len, durability)| Op::Submit { len, durability }),
        4 => Just(Op::Sync),
        3 => any::<u8>().prop_map(|frac| Op::Read { frac }),
        3 => any::<u8>().prop_map(|frac| Op::TruncateBefore { frac }),
        8 => prop_oneof![
            Just(CrashKind::Clean),
            Just(CrashKind::Torn),
            Just(CrashKind::Process)
        ]
        .prop_map(Op::Crash),
        6 => (0..FAULT_KINDS.len(), 1..=4u8).prop_map(|(k, nth)| Op::Fail {
            kind: FAULT_KINDS[k],
            nth
        }),
        2 => (0..=65535u32).prop_map(|keep| Op::ShortWrite { keep }),
        3 => option::of(0..=262_140u32).prop_map(Op::SetBudget),
        4 => Just(Op::Reopen),
    ]
}

fn workload() -> impl Strategy<Value = (u64, Vec<Op>)> {
    any::<u64>().prop_flat_map(|seed| {
        let max = RunConfig::for_seed(seed).record_bytes_max as u32;
        (Just(seed), vec(op(max), 1..150))
    })
}

/// 64 cases by default (a few seconds in a debug build); `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    /// After every step and every recovery, the log agrees with the model: acknowledged
    /// records get dense, never reused LSNs; reads return exactly what was appended; after
    /// any crash the log is a dense prefix of what was appended, holds every record
    /// acknowledged `Sync` or at or below an observed `durable_lsn` (and, after a process
    /// crash, everything written), no garbage record, and continues at the next LSN; an
    /// injected write or sync error poisons the handle and reopening recovers.
    #[test]
    fn log_matches_model((seed, ops) in workload()) {
        if let Err(e) = run_ops(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The soak's workloads for a few seeds (the soak runs many more; see `examples/sim_soak.rs`).
#[test]
fn seeded_workloads_match_model() {
    for seed in 0..40 {
        let ops = random_ops(seed, 150);
        if let Err(e) = run_ops(seed, &ops) {
            panic!("{e}\nreproduce: cargo run --release --features sim --example sim_soak -- --start {seed} --seeds 1 --ops 150");
        }
    }
}

/// A seed and its operations give the same run every time: a failing seed reproduces.
#[test]
fn runs_are_deterministic() {
    for seed in [3, 1234, 987_654_321] {
        let ops = random_ops(seed, 120);
        let a = run_ops(seed, &ops).expect("run");
        let b = run_ops(seed, &ops).expect("run");
        assert_eq!(a, b, "seed {seed}");
    }
}

#[test]
fn every_operation_kind_is_exercised() {
    let ops: Vec<Op> = (0..20).flat_map(|seed| random_ops(seed, 200)).collect();
    let has = |f: &dyn Fn(&Op) -> bool| ops.iter().any(f);
    assert!(has(&|o| matches!(
        o,
        Op::Append {
            durability: Durability::Buffer,
            ..
        }
    )));
    assert!(has(&|o| matches!(
        o,
        Op::AppendMany {
            one_invalid: true,
            ..
        }
    )));
    assert!(has(&|o| matches!(o, Op::Submit { .. })));
    assert!(has(&|o| matches!(o, Op::Crash(CrashKind::Torn))));
    assert!(has(&|o| matches!(o, Op::Crash(CrashKind::Process))));
    assert!(has(&|o| matches!(
        o,
        Op::Fail {
            kind: FaultKind::SyncDir,
            ..
        }
    )));
    assert!(has(&|o| matches!(o, Op::ShortWrite { .. })));
    assert!(has(&|o| matches!(o, Op::SetBudget(Some(_)))));
    assert!(has(&|o| matches!(o, Op::TruncateBefore { .. })));
}

/// The fuzzer's byte encoding gives back the operations the corpus generator encoded.
#[test]
fn op_codec_round_trips() {
    for seed in 0..200u64 {
        let ops = random_ops(seed, 60);
        let bytes = ops_to_bytes(seed, &ops);
        assert_eq!(ops_from_bytes(&bytes), (seed, ops), "seed {seed}");
    }
    // Any bytes decode to something.
    let (_, ops) = ops_from_bytes(&[0xff; 300]);
    assert!(!ops.is_empty());
}

/// The fuzz targets' bodies pass on their seed corpora.
#[test]
fn fuzz_seed_corpora_pass() {
    for target in TARGETS {
        for (i, input) in seed_corpus(target).iter().enumerate() {
            let result = std::panic::catch_unwind(|| run_target(target, input));
            assert!(result.is_ok(), "fuzz target {target}: seed input {i} fails");
        }
    }
}

/// Inputs the fuzzers once failed on (`fuzz/regressions/<target>/`) pass now.
#[test]
fn fuzz_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for target in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("list regressions").path();
            let input = std::fs::read(&path).expect("read regression input");
            let result = std::panic::catch_unwind(|| run_target(target, &input));
            assert!(
                result.is_ok(),
                "fuzz target {target}: {} fails",
                path.display()
            );
        }
    }
}
