//! The key-value store (`groupwal::Db`) on the real file system: a model-based property test
//! against a `BTreeMap` with reopens and checkpoints, concurrent writers and readers,
//! `write_each` with mixed valid and invalid items, poison pills, large values and a million
//! small keys. Crash tests on the simulated storage are in `tests/kv_crash.rs`.
//!
//! Tests that wait on threads do so with a deadline: a hang fails with a message.

#[path = "support/strategies.rs"]
mod strategies;

use groupwal::kv::{status, WriteItem};
use groupwal::{
    Db, DbOptions, Durability, Error, Record, RecoveryMode, Wal, WalOptions, WriteBatch,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use strategies::durability;

/// Small segments so that tests rotate, truncate and checkpoint a lot.
fn small_options() -> DbOptions {
    DbOptions::default()
        .wal_options(
            WalOptions::default()
                .segment_bytes(256 << 10)
                .record_bytes_max(128 << 10),
        )
        .key_bytes_max(64)
        .value_bytes_max(64 << 10)
        .log_bytes_max(None)
}

fn collect(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .unwrap()
        .collect::<Result<BTreeMap<_, _>, _>>()
        .unwrap()
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit`.
fn with_deadline<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(_) => panic!("did not finish within {limit:?}: a hang"),
    }
}

#[test]
fn put_get_delete_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert!(db.is_empty());
    db.put(b"a", b"1").unwrap();
    db.put(b"b", vec![7u8; 1000]).unwrap();
    db.put_with(b"c", b"3", Durability::Flush).unwrap();
    db.put_with(b"d", vec![9u8; 100], Durability::Buffer)
        .unwrap();
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert_eq!(db.get(b"b").unwrap(), Some(vec![7u8; 1000]));
    assert_eq!(db.get(b"d").unwrap(), Some(vec![9u8; 100]));
    assert!(db.contains_key(b"c"));
    assert_eq!(db.len(), 3);
    db.close().unwrap();
    assert!(matches!(db.put(b"x", b"y"), Err(Error::Closed)));
    drop(db);

    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 5);
    assert_eq!(db.get(b"b").unwrap(), Some(vec![7u8; 1000]));
    assert_eq!(db.get(b"c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(db.get(b"d").unwrap(), Some(vec![9u8; 100]));
    assert_eq!(db.get(b"a").unwrap(), None);
    let report = db.checkpoint().unwrap();
    assert!(report.written);
    assert_eq!(report.entries, 3);
    assert!(
        !db.checkpoint().unwrap().written,
        "nothing new to checkpoint"
    );
    drop(db);

    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.recovery_report().checkpoint_entries, 3);
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(db.get(b"b").unwrap(), Some(vec![7u8; 1000]));
    assert_eq!(db.len(), 3);
}

#[test]
fn invalid_input_and_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert!(matches!(db.put(b"", b"v"), Err(Error::InvalidInput { .. })));
    assert!(matches!(
        db.put(vec![1u8; 65], b"v"),
        Err(Error::InvalidInput { .. })
    ));
    let e = db.put(b"k", vec![0u8; (64 << 10) + 1]).unwrap_err();
    assert!(e.to_string().contains("value_bytes_max"), "{e}");
    assert!(matches!(
        db.write(WriteBatch::new()),
        Err(Error::InvalidInput { .. })
    ));
    assert!(db.is_empty(), "nothing was written");
    drop(db);

    let too_big = DbOptions::default().value_bytes_max(32 << 20);
    match Db::open(dir.path(), too_big) {
        Err(Error::InvalidOptions { name, .. }) => assert_eq!(name, "value_bytes_max"),
        other => panic!("{other:?}"),
    }
    let jitter = DbOptions::default().checkpoint_interval_jitter(Duration::from_secs(1));
    assert!(matches!(
        Db::open(dir.path(), jitter),
        Err(Error::InvalidOptions {
            name: "checkpoint_interval_jitter",
            ..
        })
    ));
}

#[test]
fn write_batch_is_atomic_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(b"x", b"1")
        .put(b"y", vec![2u8; 300])
        .delete(b"x")
        .put(b"x", b"final")
        .correlation_id(77u64);
    let receipt = db.write(batch).unwrap();
    assert_eq!(db.get(b"x").unwrap(), Some(b"final".to_vec()));
    // An invalid op fails the whole batch, writing nothing.
    let mut bad = WriteBatch::new();
    bad.put(b"z", b"1").put(b"", b"2");
    assert!(db.write(bad).is_err());
    assert!(!db.contains_key(b"z"));
    drop(db);
    let wal = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
    let records: Vec<_> = wal.read_from(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 1, "one batch, one record");
    assert_eq!(records[0].lsn, receipt.lsn);
    assert_eq!(records[0].correlation_id, Some(77u64.into()));
    drop(wal);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.get(b"x").unwrap(), Some(b"final".to_vec()));
    assert_eq!(db.get(b"y").unwrap(), Some(vec![2u8; 300]));
}

#[test]
fn write_each_rejects_invalid_items_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(b"gone", b"x").unwrap();
    let outcome = db.write_each(vec![
        WriteItem::put("a".to_string(), "k1", "v1"),
        WriteItem::put("b".to_string(), "", "v"),
        WriteItem::put("c".to_string(), vec![b'k'; 65], "v"),
        WriteItem::put("d".to_string(), "k2", vec![0u8; (64 << 10) + 1]),
        WriteItem::delete("e".to_string(), "gone"),
        WriteItem::put("f".to_string(), "k3", vec![5u8; 500]),
    ]);
    let codes: Vec<u16> = outcome.results.iter().map(|r| r.status).collect();
    assert_eq!(codes, [200, 400, 400, 400, 200, 200]);
    assert_eq!(outcome.http_status(), 207);
    assert!(!outcome.all_ok());
    let ids: Vec<&str> = outcome.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);
    assert!(outcome.results[0].lsn.is_some());
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(
        json["results"][0],
        serde_json::json!({"id": "a", "status": 200})
    );
    assert_eq!(json["results"][1]["status"], 400);
    assert_eq!(
        json["results"][1]["error"],
        "invalid input: empty key; keys must have at least one byte"
    );
    assert!(json["results"][2]["error"]
        .as_str()
        .unwrap()
        .contains("key_bytes_max"));
    assert!(json["results"][3]["error"]
        .as_str()
        .unwrap()
        .contains("value_bytes_max"));
    assert_eq!(
        json.as_object().unwrap().len(),
        1,
        "only `results` at the top"
    );
    assert_eq!(db.get(b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(db.get(b"k3").unwrap(), Some(vec![5u8; 500]));
    assert_eq!(db.get(b"gone").unwrap(), None);
    assert!(!db.contains_key(b"k2"));

    // Numeric ids, and a batch too big for one record is split, not refused.
    let items: Vec<_> = (0..40u32)
        .map(|i| WriteItem::put(i, format!("big{i:02}"), vec![i as u8; 10_000]))
        .collect();
    let outcome = db.write_each_with(items, Durability::Flush);
    assert!(outcome.all_ok(), "{outcome:?}");
    assert_eq!(
        serde_json::to_string(&outcome.results[3]).unwrap(),
        r#"{"id":3,"status":200}"#
    );
    let lsns: std::collections::BTreeSet<_> = outcome.results.iter().map(|r| r.lsn).collect();
    assert!(lsns.len() > 1, "40 x 10 KB does not fit one 128 KiB record");
    assert_eq!(db.prefix(b"big").unwrap().count(), 40);

    // After close: every item is refused with 503.
    db.close().unwrap();
    let outcome = db.write_each(vec![WriteItem::put("z".to_string(), "k", "v")]);
    assert_eq!(outcome.results[0].status, status::UNAVAILABLE);
}

#[test]
fn range_and_prefix_iterate_in_order_over_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    for k in ["a", "ab", "abc", "abd", "b", "ba"] {
        db.put_with(k, format!("value of {k}"), Durability::Flush)
            .unwrap();
    }
    db.put_with("\u{ff}", "x", Durability::Buffer).unwrap();
    fn keys(it: impl Iterator<Item = groupwal::Result<(Vec<u8>, Vec<u8>)>>) -> Vec<String> {
        it.map(|r| String::from_utf8(r.unwrap().0).unwrap())
            .collect()
    }
    assert_eq!(keys(db.prefix(b"ab").unwrap()), ["ab", "abc", "abd"]);
    assert_eq!(
        keys(db.range(&b"ab"[..]..&b"b"[..]).unwrap()),
        ["ab", "abc", "abd"]
    );
    assert_eq!(keys(db.range(&b"b"[..]..).unwrap()), ["b", "ba", "\u{ff}"]);
    assert_eq!(keys(db.range(..=&b"ab"[..]).unwrap().rev()), ["ab", "a"]);
    assert!(keys(db.range(&b"z"[..]..&b"a"[..]).unwrap()).is_empty());

    // The snapshot does not see later writes, and its values stay readable across a
    // checkpoint that would remove the segments they are in.
    let snapshot = db.iter().unwrap();
    db.delete(b"abc").unwrap();
    db.put(b"new", b"v").unwrap();
    let report = db.checkpoint().unwrap();
    assert!(report.truncation_deferred || report.segments_removed == 0);
    let seen: Vec<_> = snapshot.collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[2], (b"abc".to_vec(), b"value of abc".to_vec()));
    assert_eq!(db.len(), 7);
    assert_eq!(db.get(b"abc").unwrap(), None);
}

#[test]
fn large_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions::default()
        .wal_options(
            WalOptions::default()
                .segment_bytes(16 << 20)
                .record_bytes_max(6 << 20),
        )
        .value_bytes_max(5 << 20)
        .log_bytes_max(None);
    let value = |n: usize, seed: u8| -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    };
    let db = Db::open(dir.path(), options.clone()).unwrap();
    db.put(b"one", value(1 << 20, 1)).unwrap();
    db.put_with(b"three", value(3 << 20, 3), Durability::Buffer)
        .unwrap();
    db.put(b"five", value(5 << 20, 5)).unwrap();
    assert_eq!(db.get(b"three").unwrap().unwrap(), value(3 << 20, 3));
    assert_eq!(db.get(b"five").unwrap().unwrap(), value(5 << 20, 5));
    drop(db);
    let db = Db::open(dir.path(), options.clone()).unwrap();
    assert_eq!(db.get(b"one").unwrap().unwrap(), value(1 << 20, 1));
    db.checkpoint().unwrap();
    db.put(b"one", value(2 << 20, 2)).unwrap();
    assert_eq!(db.get(b"three").unwrap().unwrap(), value(3 << 20, 3));
    drop(db);
    let db = Db::open(dir.path(), options).unwrap();
    assert_eq!(db.get(b"one").unwrap().unwrap(), value(2 << 20, 2));
    assert_eq!(db.get(b"five").unwrap().unwrap(), value(5 << 20, 5));
    assert_eq!(db.get(b"three").unwrap().unwrap(), value(3 << 20, 3));
}

/// A million keys, written in batches (`Buffer`, one sync at the end), replayed, then
/// checkpointed and loaded again. Unoptimized builds (the CI's `cargo test`) are about ten
/// times slower, so they run a fifth of it; `cargo test --release --test kv` runs it all.
#[test]
fn a_million_small_keys() {
    const N: u32 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions::default()
        .durability(Durability::Buffer)
        .log_bytes_max(None);
    let key = |i: u32| format!("key{i:08}");
    let t = Instant::now();
    let db = Db::open(dir.path(), options.clone()).unwrap();
    for chunk in 0..N / 10_000 {
        let mut batch = WriteBatch::new();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            batch.put(key(i), i.to_le_bytes().repeat(5));
        }
        db.write(batch).unwrap();
    }
    db.sync().unwrap();
    assert_eq!(db.len(), N as usize);
    eprintln!("write {:?}", t.elapsed());
    drop(db);

    let db = Db::open(dir.path(), options.clone()).unwrap();
    assert_eq!(db.len(), N as usize);
    for i in (0..N).step_by(9973) {
        assert_eq!(db.get(key(i)).unwrap(), Some(i.to_le_bytes().repeat(5)));
    }
    eprintln!("replay {:?}", t.elapsed());
    let report = db.checkpoint().unwrap();
    assert_eq!(report.entries, N as u64);
    eprintln!("checkpoint {:?}", t.elapsed());
    drop(db);

    let db = Db::open(dir.path(), options).unwrap();
    assert_eq!(db.recovery_report().checkpoint_entries, N as u64);
    assert_eq!(db.len(), N as usize);
    for i in (0..N).step_by(7919) {
        assert_eq!(db.get(key(i)).unwrap(), Some(i.to_le_bytes().repeat(5)));
    }
    eprintln!("load {:?}", t.elapsed());
    assert_eq!(db.prefix(b"key0000").unwrap().count(), 10_000);
}

#[test]
fn poison_pill_fails_open_naming_its_lsn_unless_salvaging() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(b"before", b"1").unwrap();
    drop(db);
    // A record from "a newer version": payload version 9.
    let wal = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
    let pill = wal.append(Record::new(b"\x09future op")).unwrap();
    drop(wal);
    let db = Db::open(dir.path(), small_options()).unwrap_err();
    match &db {
        Error::BadRecord { lsn, reason } => {
            assert_eq!(*lsn, pill.lsn);
            assert!(reason.contains("version 9"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(db.to_string().contains("Salvage"), "says what to do: {db}");

    let salvage = small_options().recovery_mode(RecoveryMode::Salvage);
    let db = Db::open(dir.path(), salvage.clone()).unwrap();
    let q = &db.recovery_report().quarantined;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].lsn, pill.lsn);
    assert_eq!(std::fs::read(&q[0].file).unwrap(), b"\x09future op");
    let report = std::fs::read_to_string(dir.path().join("quarantine/report.txt")).unwrap();
    assert!(report.contains(&format!("lsn={}", pill.lsn)), "{report}");
    assert_eq!(db.get(b"before").unwrap(), Some(b"1".to_vec()));
    db.put(b"after", b"2").unwrap();
    // Once a checkpoint covers the pill, it is gone for good.
    db.checkpoint().unwrap();
    drop(db);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.get(b"after").unwrap(), Some(b"2".to_vec()));
}

fn damage_checkpoint(dir: &std::path::Path) {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "kvc"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1; // inside the last value
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn damaged_checkpoint_is_refused_or_set_aside() {
    // The log still holds everything the checkpoint covers: salvage falls back to it.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(b"k", vec![1u8; 100]).unwrap();
    db.checkpoint().unwrap();
    drop(db);
    damage_checkpoint(dir.path());
    let e = Db::open(dir.path(), small_options()).unwrap_err();
    assert!(matches!(e, Error::BadCheckpoint { .. }), "{e}");
    assert!(e.is_corruption());
    assert!(e.to_string().contains("checksum"), "{e}");
    let db = Db::open(
        dir.path(),
        small_options().recovery_mode(RecoveryMode::Salvage),
    )
    .unwrap();
    assert_eq!(db.recovery_report().checkpoints_set_aside.len(), 1);
    assert_eq!(db.get(b"k").unwrap(), Some(vec![1u8; 100]));
    drop(db);

    // The checkpoint let the log drop the segments it covers: nothing to fall back to.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    for i in 0..40u32 {
        db.put_with(format!("k{i}"), vec![1u8; 10_000], Durability::Flush)
            .unwrap();
    }
    let report = db.checkpoint().unwrap();
    assert!(report.segments_removed > 0, "{report:?}");
    drop(db);
    damage_checkpoint(dir.path());
    let e = Db::open(
        dir.path(),
        small_options().recovery_mode(RecoveryMode::Salvage),
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn automatic_checkpoint_by_log_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options().log_bytes_max(Some(64 << 10))).unwrap();
    for i in 0..100u32 {
        db.put_with(format!("k{i}"), vec![i as u8; 1000], Durability::Flush)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.stats().checkpoints_written == 0 {
        assert!(Instant::now() < deadline, "no automatic checkpoint");
        std::thread::yield_now();
    }
    for i in 0..100u32 {
        assert_eq!(db.get(format!("k{i}")).unwrap(), Some(vec![i as u8; 1000]));
    }
    drop(db);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert!(db.recovery_report().checkpoint_lsn.is_some());
    assert_eq!(db.len(), 100);
}

#[test]
fn automatic_checkpoint_on_an_interval_with_jitter() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_options()
        .checkpoint_interval(Some(Duration::from_millis(50)))
        .checkpoint_interval_jitter(Duration::from_millis(20));
    let db = Db::open(dir.path(), options).unwrap();
    db.put_with(b"k", vec![4u8; 500], Durability::Buffer)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.stats().checkpoints_written == 0 {
        assert!(Instant::now() < deadline, "no checkpoint on the interval");
        std::thread::yield_now();
    }
    assert_eq!(
        db.stats().pending_values,
        0,
        "written Buffer values leave memory"
    );
    assert_eq!(db.get(b"k").unwrap(), Some(vec![4u8; 500]));
}

/// Writers of one key with mixed durabilities finish out of LSN order (a `Buffer` write is
/// acknowledged before an earlier `Sync` one): the index must still end in log order, the
/// same state replay rebuilds.
#[test]
fn concurrent_writes_of_one_key_end_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), small_options()).unwrap());
    let last = with_deadline(Duration::from_secs(60), {
        let db = db.clone();
        move || {
            let handles: Vec<_> = (0..4u8)
                .map(|t| {
                    let db = db.clone();
                    std::thread::spawn(move || {
                        let mut best = (0u64, Vec::new());
                        for i in 0..150u32 {
                            let d = [Durability::Sync, Durability::Buffer, Durability::Flush]
                                [(i as usize + t as usize) % 3];
                            let value = format!("t{t} i{i} {}", "x".repeat((i % 3) as usize * 20));
                            let r = if i % 7 == 0 {
                                db.delete_with(b"hot", d).unwrap()
                            } else {
                                db.put_with(b"hot", &value, d).unwrap()
                            };
                            let v = if i % 7 == 0 {
                                Vec::new()
                            } else {
                                value.into_bytes()
                            };
                            if r.lsn > best.0 {
                                best = (r.lsn, v);
                            }
                        }
                        best
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .max_by_key(|b| b.0)
                .unwrap()
        }
    });
    let expected = (!last.1.is_empty()).then_some(last.1);
    assert_eq!(db.get(b"hot").unwrap(), expected);
    let db = Arc::into_inner(db).unwrap();
    drop(db);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.get(b"hot").unwrap(), expected, "replay agrees");
}

/// Writers and readers at once: readers check that every atomic batch is seen whole and that
/// values never go back, while checkpoints run.
#[test]
fn concurrent_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Arc::new(Db::open(dir.path(), small_options().log_bytes_max(Some(128 << 10))).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    with_deadline(Duration::from_secs(90), {
        let db = db.clone();
        move || {
            let writers: Vec<_> = (0..4u32)
                .map(|t| {
                    let db = db.clone();
                    std::thread::spawn(move || {
                        for i in 0..200u32 {
                            // The pair (a, b) of a writer always holds equal counters.
                            let mut batch = WriteBatch::new();
                            let v = format!("{i:08}{}", "p".repeat(40));
                            batch.put(format!("w{t}/a"), &v).put(format!("w{t}/b"), &v);
                            let d = [Durability::Sync, Durability::Flush, Durability::Buffer]
                                [(i % 3) as usize];
                            batch.durability(d);
                            db.write(batch).unwrap();
                            db.put_with(format!("w{t}/k{}", i % 50), v, Durability::Flush)
                                .unwrap();
                        }
                    })
                })
                .collect();
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let db = db.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut seen = [0u32; 4];
                        let mut scans = 0;
                        while !stop.load(Ordering::Relaxed) || scans == 0 {
                            for (t, seen) in seen.iter_mut().enumerate() {
                                let snap: BTreeMap<_, _> = db
                                    .prefix(format!("w{t}/"))
                                    .unwrap()
                                    .collect::<Result<_, _>>()
                                    .unwrap();
                                let a = snap.get(format!("w{t}/a").as_bytes());
                                let b = snap.get(format!("w{t}/b").as_bytes());
                                assert_eq!(a, b, "a batch was seen half applied");
                                if let Some(a) = a {
                                    let n: u32 =
                                        std::str::from_utf8(&a[..8]).unwrap().parse().unwrap();
                                    assert!(n >= *seen, "value went back from {seen} to {n}");
                                    *seen = n;
                                }
                                let got = db.get(format!("w{t}/a")).unwrap();
                                if let Some(g) = got {
                                    let n: u32 =
                                        std::str::from_utf8(&g[..8]).unwrap().parse().unwrap();
                                    assert!(n >= *seen);
                                }
                            }
                            scans += 1;
                        }
                        scans
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
        }
    });
    let before = collect(&db);
    assert_eq!(before.len(), 4 * 52);
    let db = Arc::into_inner(db).unwrap();
    drop(db);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(collect(&db), before, "reopen rebuilds the same state");
}

// ---------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Put(u8, usize, Durability),
    Delete(u8, Durability),
    Batch(Vec<(u8, Option<usize>)>),
    Checkpoint,
    Reopen,
    Scan(u8, u8),
}

fn value_len() -> impl Strategy<Value = usize> {
    strategies::value_len(13..200, 1000..20_000)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24u8, value_len(), durability()).prop_map(|(k, n, d)| Op::Put(k, n, d)),
        2 => (0..24u8, durability()).prop_map(|(k, d)| Op::Delete(k, d)),
        2 => prop::collection::vec((0..24u8, prop::option::of(value_len())), 1..6)
            .prop_map(Op::Batch),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => (0..24u8, 0..24u8).prop_map(|(a, b)| Op::Scan(a, b)),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Some keys longer than the index's inline limit.
    if k % 5 == 0 {
        format!("long-key-{k:03}-{}", "z".repeat(30)).into_bytes()
    } else {
        format!("k{k:03}").into_bytes()
    }
}

fn value(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(7) ^ salt) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn model_matches_btreemap(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), small_options()).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k, n, d) => {
                    let v = value(n, step);
                    db.put_with(key(k), &v, d).unwrap();
                    model.insert(key(k), v);
                }
                Op::Delete(k, d) => {
                    db.delete_with(key(k), d).unwrap();
                    model.remove(&key(k));
                }
                Op::Batch(items) => {
                    let mut batch = WriteBatch::new();
                    for (i, (k, v)) in items.iter().enumerate() {
                        match v {
                            Some(n) => {
                                let v = value(*n, step * 16 + i);
                                batch.put(key(*k), &v);
                                model.insert(key(*k), v);
                            }
                            None => {
                                batch.delete(key(*k));
                                model.remove(&key(*k));
                            }
                        }
                    }
                    db.write(batch).unwrap();
                }
                Op::Checkpoint => {
                    db.checkpoint().unwrap();
                }
                Op::Reopen => {
                    drop(db);
                    db = Db::open(dir.path(), small_options()).unwrap();
                }
                Op::Scan(a, b) => {
                    let (a, b) = (key(a).min(key(b)), key(a).max(key(b)));
                    let got: Vec<_> = db.range(&a[..]..&b[..]).unwrap()
                        .collect::<Result<Vec<_>, _>>().unwrap();
                    let want: Vec<_> = model.range(a..b)
                        .map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(db.len(), model.len());
        }
        prop_assert_eq!(&collect(&db), &model);
        for (k, v) in &model {
            prop_assert_eq!(db.get(k).unwrap(), Some(v.clone()));
        }
        drop(db);
        let db = Db::open(dir.path(), small_options()).unwrap();
        prop_assert_eq!(&collect(&db), &model);
    }
}
