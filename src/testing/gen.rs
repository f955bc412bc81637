//! Making operation sequences: from a seed (the soak), and from raw bytes (the fuzzer), with
//! the inverse encoding so that seed corpora can be written from seeded sequences.

use super::model::{CrashKind, Op, RunConfig};
use crate::io::sim::FaultKind;
use crate::Durability;

/// Every fault kind, in the order the byte encoding numbers them.
pub const FAULT_KINDS: [FaultKind; 9] = [
    FaultKind::Write,
    FaultKind::Resize,
    FaultKind::SyncData,
    FaultKind::SyncAll,
    FaultKind::SyncDir,
    FaultKind::Sync,
    FaultKind::Create,
    FaultKind::Rename,
    FaultKind::Remove,
];

const DURABILITIES: [Durability; 3] = [Durability::Sync, Durability::Flush, Durability::Buffer];
const CRASHES: [CrashKind; 3] = [CrashKind::Clean, CrashKind::Torn, CrashKind::Process];

/// Bytes per encoded operation: a tag and four argument bytes.
const OP_BYTES: usize = 5;
/// The most operations decoded from one input (keeps fuzz executions short).
const OPS_MAX: usize = 400;
/// Most records in one `AppendMany`.
const BATCH_MAX: u8 = 15;

fn random_len(rng: &mut fastrand::Rng, max: u32) -> u32 {
    match rng.u8(0..10) {
        0..=4 => rng.u32(0..=64.min(max)),
        5..=8 => rng.u32(0..=max),
        // Around the limit, one above it (an invalid record).
        _ => rng.u32(max.saturating_sub(2)..=max + 1),
    }
}

fn random_durability(rng: &mut fastrand::Rng) -> Durability {
    match rng.u8(0..10) {
        0..=3 => Durability::Sync,
        4..=6 => Durability::Flush,
        _ => Durability::Buffer,
    }
}

/// `count` random operations for the run with `seed` (mostly appends, with syncs, reads,
/// truncations, crashes of each kind, faults of each kind, space budgets and reopens).
pub fn random_ops(seed: u64, count: usize) -> Vec<Op> {
    let max = RunConfig::for_seed(seed).record_bytes_max as u32;
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0005_EED0_F0B5);
    (0..count)
        .map(|_| match rng.u32(0..100) {
            0..=37 => Op::Append {
                len: random_len(&mut rng, max),
                durability: random_durability(&mut rng),
                with_id: rng.bool(),
            },
            38..=47 => Op::AppendMany {
                count: rng.u8(0..=BATCH_MAX),
                len: random_len(&mut rng, max).min(max),
                durability: random_durability(&mut rng),
                one_invalid: rng.u8(0..4) == 0,
            },
            48..=51 => Op::Submit {
                len: random_len(&mut rng, max),
                durability: random_durability(&mut rng),
            },
            52..=56 => Op::Sync,
            57..=60 => Op::Read { frac: rng.u8(..) },
            61..=64 => Op::TruncateBefore { frac: rng.u8(..) },
            65..=73 => Op::Crash(CRASHES[rng.usize(0..3)]),
            74..=81 => Op::Fail {
                kind: FAULT_KINDS[rng.usize(0..FAULT_KINDS.len())],
                nth: rng.u8(1..=4),
            },
            82..=83 => Op::ShortWrite {
                keep: rng.u32(0..=u16::MAX as u32),
            },
            84..=87 => Op::SetBudget(if rng.bool() {
                None
            } else {
                Some(rng.u32(0..=u16::MAX as u32) * 4)
            }),
            _ => Op::Reopen,
        })
        .collect()
}

/// A 16-bit value scaled to a length in `0..=max + 1`.
fn scale_len(v: u16, max: u32) -> u32 {
    (v as u64 * (max as u64 + 2) / 65536) as u32
}

/// The smallest 16-bit value that [`scale_len`] maps to `len` (for lengths up to `max + 1`).
fn unscale_len(len: u32, max: u32) -> u16 {
    let d = max as u64 + 2;
    (((len as u64) * 65536).div_ceil(d)).min(u16::MAX as u64) as u16
}

fn u16_of(a: u8, b: u8) -> u16 {
    u16::from_le_bytes([a, b])
}

/// Decodes fuzzer bytes into a seed and operations: 8 bytes of seed (little endian), then
/// 5 bytes per operation, a tag and four arguments. Missing bytes read as zero; every input
/// decodes to something.
pub fn ops_from_bytes(data: &[u8]) -> (u64, Vec<Op>) {
    let mut seed = [0u8; 8];
    let head = data.len().min(8);
    seed[..head].copy_from_slice(&data[..head]);
    let seed = u64::from_le_bytes(seed);
    let max = RunConfig::for_seed(seed).record_bytes_max as u32;
    let ops = data[head..]
        .chunks(OP_BYTES)
        .take(OPS_MAX)
        .map(|chunk| {
            let mut c = [0u8; OP_BYTES];
            c[..chunk.len()].copy_from_slice(chunk);
            let [tag, a, b, x, d] = c;
            match tag % 11 {
                0 => Op::Append {
                    len: scale_len(u16_of(a, b), max),
                    durability: DURABILITIES[x as usize % 3],
                    with_id: d & 1 != 0,
                },
                1 => Op::AppendMany {
                    count: a % (BATCH_MAX + 1),
                    len: scale_len(u16_of(b, x), max).min(max),
                    durability: DURABILITIES[(d & 3) as usize % 3],
                    one_invalid: d & 4 != 0,
                },
                2 => Op::Submit {
                    len: scale_len(u16_of(a, b), max),
                    durability: DURABILITIES[x as usize % 3],
                },
                3 => Op::Sync,
                4 => Op::Read { frac: a },
                5 => Op::TruncateBefore { frac: a },
                6 => Op::Crash(CRASHES[a as usize % 3]),
                7 => Op::Fail {
                    kind: FAULT_KINDS[a as usize % FAULT_KINDS.len()],
                    nth: 1 + b % 4,
                },
                8 => Op::ShortWrite {
                    keep: u16_of(a, b) as u32,
                },
                9 => Op::SetBudget((a & 1 != 0).then(|| u16_of(b, x) as u32 * 4)),
                _ => Op::Reopen,
            }
        })
        .collect();
    (seed, ops)
}

/// Encodes a seed and operations so that [`ops_from_bytes`] gives them back (for
/// operations in the ranges [`random_ops`] makes).
pub fn ops_to_bytes(seed: u64, ops: &[Op]) -> Vec<u8> {
    let max = RunConfig::for_seed(seed).record_bytes_max as u32;
    let dur = |d: &Durability| DURABILITIES.iter().position(|x| x == d).unwrap_or(0) as u8;
    let mut out = seed.to_le_bytes().to_vec();
    for op in ops.iter().take(OPS_MAX) {
        let c: [u8; OP_BYTES] = match op {
            Op::Append {
                len,
                durability,
                with_id,
            } => {
                let [a, b] = unscale_len(*len, max).to_le_bytes();
                [0, a, b, dur(durability), *with_id as u8]
            }
            Op::AppendMany {
                count,
                len,
                durability,
                one_invalid,
            } => {
                let [b, x] = unscale_len(*len, max).to_le_bytes();
                let d = dur(durability) + if *one_invalid { 4 } else { 0 };
                [1, *count, b, x, d]
            }
            Op::Submit { len, durability } => {
                let [a, b] = unscale_len(*len, max).to_le_bytes();
                [2, a, b, dur(durability), 0]
            }
            Op::Sync => [3, 0, 0, 0, 0],
            Op::Read { frac } => [4, *frac, 0, 0, 0],
            Op::TruncateBefore { frac } => [5, *frac, 0, 0, 0],
            Op::Crash(kind) => {
                let k = CRASHES.iter().position(|x| x == kind).unwrap_or(0) as u8;
                [6, k, 0, 0, 0]
            }
            Op::Fail { kind, nth } => {
                let k = FAULT_KINDS.iter().position(|x| x == kind).unwrap_or(0) as u8;
                [7, k, nth.saturating_sub(1), 0, 0]
            }
            Op::ShortWrite { keep } => {
                let [a, b] = ((*keep).min(u16::MAX as u32) as u16).to_le_bytes();
                [8, a, b, 0, 0]
            }
            Op::SetBudget(None) => [9, 0, 0, 0, 0],
            Op::SetBudget(Some(extra)) => {
                let [b, x] = ((*extra / 4).min(u16::MAX as u32) as u16).to_le_bytes();
                [9, 1, b, x, 0]
            }
            Op::Reopen => [10, 0, 0, 0, 0],
        };
        out.extend_from_slice(&c);
    }
    out
}
