//! The key-value store on the simulated storage (`--features sim`): power loss at random
//! points of a model-based run, and a fault then a crash at every storage call of a
//! checkpoint.
//!
//! What must hold after a crash: every write acknowledged as `Sync` (and everything before
//! it, the log is a prefix) is there, and the state equals the model at *some* point between
//! the last one known durable and the last one acknowledged: nothing torn, nothing reordered,
//! no write of a batch without the rest.

#[path = "support/strategies.rs"]
mod strategies;

use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::io::Storage;
use groupwal::{Db, DbOptions, Durability, WalOptions, WriteBatch};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use strategies::durability;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "db";

fn options(sim: &Arc<SimStorage>) -> DbOptions {
    let storage: Arc<dyn Storage> = sim.clone();
    DbOptions::default()
        .wal_options(
            WalOptions::default()
                .storage(storage)
                .segment_bytes(64 << 10)
                .record_bytes_max(32 << 10)
                .seed(Some(7)),
        )
        .key_bytes_max(64)
        .value_bytes_max(16 << 10)
        .log_bytes_max(None)
}

fn open(sim: &Arc<SimStorage>) -> Db {
    Db::open(Path::new(DIR), options(sim)).unwrap()
}

fn collect(db: &Db) -> Model {
    db.iter().unwrap().collect::<Result<Model, _>>().unwrap()
}

fn key(k: u8) -> Vec<u8> {
    if k % 4 == 0 {
        format!("a-long-key-beyond-the-inline-limit-{k:03}").into_bytes()
    } else {
        format!("k{k:03}").into_bytes()
    }
}

fn value(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(13) ^ salt) as u8).collect()
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, usize, Durability),
    Delete(u8, Durability),
    Batch(Vec<(u8, Option<usize>)>, Durability),
    Sync,
    Checkpoint,
    Crash(bool, u64),
    Reopen,
}

fn value_len() -> impl Strategy<Value = usize> {
    strategies::value_len(13..300, 2000..12_000)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..20u8, value_len(), durability()).prop_map(|(k, n, d)| Op::Put(k, n, d)),
        3 => (0..20u8, durability()).prop_map(|(k, d)| Op::Delete(k, d)),
        3 => (prop::collection::vec((0..20u8, prop::option::of(value_len())), 1..5), durability())
            .prop_map(|(ops, d)| Op::Batch(ops, d)),
        1 => Just(Op::Sync),
        2 => Just(Op::Checkpoint),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(torn, seed)| Op::Crash(torn, seed)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Random writes of every durability, checkpoints, clean reopens and power losses, on
    /// the simulated storage, against a `BTreeMap` and its history.
    #[test]
    fn crashes_keep_a_prefix_with_every_sync_write(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let sim = SimStorage::new(seed);
        let mut db = open(&sim);
        // Model states after each acknowledged write; `durable` indexes the last one known
        // to survive power loss.
        let mut history: Vec<Model> = vec![Model::new()];
        let mut durable = 0;
        for (step, op) in ops.into_iter().enumerate() {
            let mut next = history.last().unwrap().clone();
            match op {
                Op::Put(k, n, d) => {
                    let v = value(n, step);
                    db.put_with(key(k), &v, d).unwrap();
                    next.insert(key(k), v);
                    history.push(next);
                    if d == Durability::Sync {
                        durable = history.len() - 1;
                    }
                }
                Op::Delete(k, d) => {
                    db.delete_with(key(k), d).unwrap();
                    next.remove(&key(k));
                    history.push(next);
                    if d == Durability::Sync {
                        durable = history.len() - 1;
                    }
                }
                Op::Batch(items, d) => {
                    let mut batch = WriteBatch::new();
                    batch.durability(d);
                    for (i, (k, v)) in items.iter().enumerate() {
                        match v {
                            Some(n) => {
                                let v = value(*n, step * 8 + i);
                                batch.put(key(*k), &v);
                                next.insert(key(*k), v);
                            }
                            None => {
                                batch.delete(key(*k));
                                next.remove(&key(*k));
                            }
                        }
                    }
                    match db.write(batch) {
                        Ok(_) => history.push(next),
                        // A batch above `record_bytes_max` is refused whole, with a clear
                        // error, and changes nothing.
                        Err(groupwal::Error::InvalidInput { reason }) => {
                            let bytes: usize = items.iter().filter_map(|(_, n)| *n).sum();
                            prop_assert!(bytes > 30_000, "refused {bytes} value bytes: {reason}");
                            continue;
                        }
                        Err(e) => panic!("batch: {e:?}"),
                    }
                    if d == Durability::Sync {
                        durable = history.len() - 1;
                    }
                }
                Op::Sync => {
                    db.sync().unwrap();
                    durable = history.len() - 1;
                }
                Op::Checkpoint => {
                    db.checkpoint().unwrap();
                    durable = history.len() - 1;
                }
                Op::Reopen => {
                    drop(db);
                    db = open(&sim);
                    prop_assert_eq!(&collect(&db), history.last().unwrap());
                    history = vec![history.pop().unwrap()];
                    durable = 0;
                }
                Op::Crash(torn, crash_seed) => {
                    let mode = if torn { CrashMode::Torn } else { CrashMode::Clean };
                    sim.crash_with_seed(mode, crash_seed);
                    drop(db); // its handles are stale; closing fails quietly
                    db = open(&sim);
                    let got = collect(&db);
                    let at = (durable..history.len()).find(|&j| history[j] == got);
                    prop_assert!(
                        at.is_some(),
                        "after a {mode:?} crash the store matches no state between the last \
                         durable one ({durable}) and the last acknowledged one ({}): {got:?}",
                        history.len() - 1
                    );
                    history = vec![got];
                    durable = 0;
                }
            }
            prop_assert_eq!(db.len(), history.last().unwrap().len());
        }
        let last = history.last().unwrap().clone();
        prop_assert_eq!(&collect(&db), &last);
        for (k, v) in &last {
            prop_assert_eq!(db.get(k).unwrap(), Some(v.clone()));
        }
    }
}

/// Builds a store with an older checkpoint, several log segments after it, overwrites and
/// deletes, all written `Sync`. Returns the store and its expected contents.
fn populated(sim: &Arc<SimStorage>) -> (Db, Model) {
    let db = open(sim);
    let mut model = Model::new();
    for i in 0..30u8 {
        let v = value(2000 + i as usize * 10, i as usize);
        db.put(key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    db.checkpoint().unwrap();
    for i in 0..90u8 {
        let k = key(i % 35);
        if i % 6 == 5 {
            db.delete(&k).unwrap();
            model.remove(&k);
        } else {
            let v = value(if i % 3 == 0 { 5 } else { 3000 }, 100 + i as usize);
            db.put(&k, &v).unwrap();
            model.insert(k, v);
        }
    }
    (db, model)
}

const KINDS: [FaultKind; 7] = [
    FaultKind::Create,
    FaultKind::Write,
    FaultKind::SyncAll,
    FaultKind::Rename,
    FaultKind::SyncDir,
    FaultKind::Remove,
    FaultKind::SyncData,
];

/// A checkpoint interrupted at each of its storage calls (the call fails with `EIO`, as if
/// power failed there), then power loss of either kind: reopening always gives exactly the
/// acknowledged state, and the store that saw the failure keeps working.
#[test]
fn checkpoint_interrupted_at_every_call_loses_nothing() {
    let mut points = 0;
    for (k, kind) in KINDS.iter().enumerate() {
        for n in 1..=16u64 {
            let sim = SimStorage::new(1000 + k as u64 * 100 + n);
            let (db, model) = populated(&sim);
            let before = sim.stats().faults_injected;
            sim.fail_nth(*kind, n);
            let result = db.checkpoint();
            let fired = sim.stats().faults_injected > before;
            sim.clear_faults();
            if !fired {
                result.unwrap();
                break; // the checkpoint makes fewer than n calls of this kind
            }
            points += 1;
            assert!(result.is_err(), "{kind:?} #{n}: the fault must surface");
            // Reads are unaffected by the failed checkpoint.
            assert_eq!(
                collect(&db),
                model,
                "{kind:?} #{n}: reads after the failure"
            );

            for (i, mode) in [CrashMode::Clean, CrashMode::Torn].into_iter().enumerate() {
                let copy = sim.fork();
                copy.crash_with_seed(mode, n * 31 + i as u64);
                let reopened = open(&copy);
                assert_eq!(
                    collect(&reopened),
                    model,
                    "{kind:?} #{n}, then a {mode:?} crash"
                );
            }

            // The store that saw the failure goes on, unless the log itself failed (a
            // failed fdatasync poisons it, by design) — then reopening recovers.
            let db = match db.put(b"after", b"failure") {
                Ok(_) => db,
                Err(e) => {
                    assert!(matches!(e, groupwal::Error::Poisoned { .. }), "{e}");
                    drop(db);
                    let db = open(&sim);
                    db.put(b"after", b"failure").unwrap();
                    db
                }
            };
            let mut model = model.clone();
            model.insert(b"after".to_vec(), b"failure".to_vec());
            db.checkpoint().unwrap();
            assert_eq!(collect(&db), model);
            drop(db);
            let copy = sim.fork();
            copy.crash_with_seed(CrashMode::Torn, n);
            assert_eq!(
                collect(&open(&copy)),
                model,
                "{kind:?} #{n}: checkpoint after"
            );
        }
    }
    // Create 1, Write 3+, SyncAll 1, Rename 1, SyncDir 3, Remove 3+ (segments, then the old
    // checkpoint).
    assert!(points >= 12, "only {points} fault points were reached");
}

/// Power loss right after each storage call of a checkpoint, without any failure: the
/// crash point is chosen by making every later call of a kind fail, which is what a power
/// cut looks like to the process.
#[test]
fn power_loss_at_every_point_of_a_checkpoint() {
    for (k, kind) in KINDS.iter().enumerate() {
        for n in 0..=12u64 {
            let sim = SimStorage::new(50 + k as u64 * 20 + n);
            let (db, model) = populated(&sim);
            let before = sim.stats().faults_injected;
            sim.fail_after(*kind, n);
            let result = db.checkpoint();
            let fired = sim.stats().faults_injected > before;
            for mode in [CrashMode::Clean, CrashMode::Torn] {
                let copy = sim.fork();
                copy.clear_faults();
                copy.crash_with_seed(mode, n);
                assert_eq!(
                    collect(&open(&copy)),
                    model,
                    "power loss after {n} {kind:?} calls of a checkpoint ({mode:?})"
                );
            }
            if !fired {
                result.unwrap();
                break;
            }
        }
    }
}

/// Regression: a `Buffer` write acknowledged before `checkpoint()` must be in the
/// checkpoint.
///
/// The story: the checkpoint's cut (the highest LSN such that it and everything before it
/// are applied to the index) was bounded by the log's *written* LSN, read before the log was
/// synced. A `Buffer` write is acknowledged while still in the log's memory, so right after
/// one the written LSN lagged: the cut came out as the previous checkpoint's, `checkpoint()`
/// reported "nothing new" and returned without even syncing the log, and power loss then
/// lost a write the caller had just checkpointed. The model test found it with
/// `[Put(Buffer), Checkpoint, Crash(Clean)]`. The checkpoint now syncs the log first and
/// computes the cut after.
#[test]
fn buffer_write_then_checkpoint_survives_power_loss() {
    let sim = SimStorage::new(3);
    let db = open(&sim);
    db.put_with(b"k", b"", Durability::Buffer).unwrap();
    db.put_with(b"big", vec![1u8; 100], Durability::Buffer)
        .unwrap();
    let report = db.checkpoint().unwrap();
    assert!(report.written);
    assert_eq!(report.entries, 2);
    sim.crash_with_seed(CrashMode::Clean, 1);
    drop(db);
    let db = open(&sim);
    assert_eq!(db.get(b"k").unwrap(), Some(Vec::new()));
    assert_eq!(db.get(b"big").unwrap(), Some(vec![1u8; 100]));
}

/// Writers of every durability run while the power fails under them. Each writer owns its
/// keys and writes them in sequence; after the crash, each writer's keys must show a prefix
/// of its sequence (the same cut for all its keys: the log is a prefix) that includes every
/// write acknowledged as `Sync`.
#[test]
fn power_loss_under_concurrent_writers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const WRITERS: usize = 4;
    const KEYS: usize = 6;
    for round in 0..6u64 {
        let sim = SimStorage::new(round);
        let db = Arc::new(open(&sim));
        let stop = Arc::new(AtomicBool::new(false));
        // Per writer: (sequence number, key index, durability, acknowledged) of each write.
        type WriteLog = Mutex<Vec<(u32, usize, Durability, bool)>>;
        let logs: Arc<Vec<WriteLog>> =
            Arc::new((0..WRITERS).map(|_| Mutex::new(Vec::new())).collect());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for t in 0..WRITERS {
            let (db, stop, logs, done) = (db.clone(), stop.clone(), logs.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for s in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = (s as usize * 7 + t) % KEYS;
                    let d = [Durability::Sync, Durability::Flush, Durability::Buffer]
                        [(s as usize + t) % 3];
                    logs[t].lock().unwrap().push((s, k, d, false));
                    let v = format!("{t}:{s}:{}", "v".repeat(s as usize % 40));
                    if db.put_with(format!("w{t}/{k}"), v, d).is_err() {
                        break; // the crash made the handles stale
                    }
                    logs[t].lock().unwrap().last_mut().unwrap().3 = true;
                }
                drop(db);
                let _ = done.send(());
            });
        }
        // Let them write, then cut the power.
        while logs.iter().map(|l| l.lock().unwrap().len()).sum::<usize>()
            < 150 + round as usize * 40
        {
            std::thread::yield_now();
        }
        sim.crash_with_seed(
            if round % 2 == 0 {
                CrashMode::Torn
            } else {
                CrashMode::Clean
            },
            round,
        );
        stop.store(true, Ordering::Relaxed);
        for _ in 0..WRITERS {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("a writer hung after the crash");
        }
        drop(Arc::into_inner(db).expect("writers are done"));
        let got = collect(&open(&sim));
        for (t, log) in logs.iter().enumerate() {
            let log = log.lock().unwrap();
            // The recovered cut of this writer: the highest sequence number it shows.
            let seq_of = |k: usize| {
                got.get(format!("w{t}/{k}").as_bytes()).map(|v| {
                    let s = String::from_utf8_lossy(v);
                    s.split(':').nth(1).unwrap().parse::<u32>().unwrap()
                })
            };
            let cut = (0..KEYS).filter_map(seq_of).max();
            let last_sync = log
                .iter()
                .filter(|w| w.2 == Durability::Sync && w.3)
                .map(|w| w.0)
                .max();
            assert!(
                cut >= last_sync,
                "round {round}, writer {t}: cut {cut:?} lost the Sync write {last_sync:?}"
            );
            for k in 0..KEYS {
                let expected = log
                    .iter()
                    .filter(|w| w.1 == k && cut.is_some_and(|c| w.0 <= c))
                    .map(|w| w.0)
                    .max();
                assert_eq!(
                    seq_of(k),
                    expected,
                    "round {round}, writer {t}, key {k}: not a prefix at cut {cut:?}"
                );
            }
        }
    }
}
