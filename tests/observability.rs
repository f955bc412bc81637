//! Observability: correlation ids across the batch boundary, per-group events, sampling,
//! and statistics that agree with what was appended.

use groupwal::format::frame_len;
use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::{
    CorrelationId, Durability, Error, GroupEvent, GroupListener, Record, Wal, WalOptions,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Runs `f` on a thread and fails the test if it does not finish within `secs`.
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("test body did not finish within {secs} s"))
}

#[derive(Default)]
struct Collect(Mutex<Vec<GroupEvent>>);

impl GroupListener for Collect {
    fn on_group(&self, event: &GroupEvent) {
        self.0.lock().push(event.clone());
    }
}

fn small() -> WalOptions {
    WalOptions::default()
        .segment_bytes(1 << 20)
        .record_bytes_max(64 << 10)
}

#[test]
fn correlation_ids_survive_a_crash_and_come_back_from_readers_and_receipts() {
    let sim = SimStorage::new(7);
    let opts = small().storage(sim.clone());
    let wal = Wal::open("log", opts.clone()).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..200u64 {
        let id = CorrelationId(0xabcd_0000_0000_0000_0000_0000_0000_0000 | i as u128);
        let record = Record::new(b"order").correlation_id(id);
        // Every third record has no id: it must come back without one.
        let record = if i % 3 == 0 {
            Record::new(b"tick")
        } else {
            record
        };
        let receipt = wal.append(record).unwrap();
        assert_eq!(receipt.correlation_id, record.get_correlation_id());
        expected.insert(receipt.lsn, receipt.correlation_id);
    }
    sim.crash(CrashMode::Torn);
    drop(wal);
    let wal = Wal::open("log", opts).unwrap();
    let got: BTreeMap<u64, Option<CorrelationId>> = wal
        .read_from(1)
        .map(|r| r.map(|r| (r.lsn, r.correlation_id)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, expected, "every synced record comes back with its id");
}

#[test]
fn the_hook_sees_every_group_exactly_once_with_correct_counts() {
    let events = Arc::new(Collect::default());
    let dir = tempfile::tempdir().unwrap();
    let opts = small()
        .listener(Some(events.clone()))
        .trace_sample_rate(1.0);
    let wal = Arc::new(Wal::open(dir.path(), opts).unwrap());
    let receipts = bounded(60, {
        let wal = wal.clone();
        move || {
            let threads: Vec<_> = (0..16u64)
                .map(|t| {
                    let wal = wal.clone();
                    std::thread::spawn(move || {
                        (0..200u64)
                            .map(|i| {
                                let id = CorrelationId(((t as u128) << 64) | i as u128);
                                wal.append(Record::new(&[t as u8; 40]).correlation_id(id))
                                    .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        }
    });
    wal.close().unwrap(); // joins the listener thread: every event has been delivered
    let events = events.0.lock().clone();
    let ids: Vec<u64> = events.iter().map(|e| e.group_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "events arrive once each, in group order"
    );
    let by_id: BTreeMap<u64, &GroupEvent> = events.iter().map(|e| (e.group_id, e)).collect();
    let total: u64 = events.iter().map(|e| e.records as u64).sum();
    assert_eq!(total, receipts.len() as u64, "records over all events");
    // LSN ranges of the record-carrying groups tile 1..=N without gaps or overlaps.
    let mut next = 1;
    for e in events.iter().filter(|e| e.records > 0) {
        assert_eq!(
            e.first_lsn, next,
            "group {} starts where the last ended",
            e.group_id
        );
        assert_eq!(e.last_lsn - e.first_lsn + 1, e.records as u64);
        assert!(e.error.is_none());
        next = e.last_lsn + 1;
    }
    for r in &receipts {
        let e = by_id
            .get(&r.group_id)
            .expect("every receipt's group has an event");
        assert_eq!(e.records, r.group_records, "group {}", r.group_id);
        assert!((e.first_lsn..=e.last_lsn).contains(&r.lsn));
        assert!(
            e.correlation_ids
                .contains(&(r.lsn, r.correlation_id.unwrap())),
            "rate 1.0 reports every id"
        );
    }
}

#[test]
fn sampling_rate_holds_statistically_and_is_deterministic_per_lsn() {
    for rate in [0.0, 0.1, 1.0] {
        let events = Arc::new(Collect::default());
        let dir = tempfile::tempdir().unwrap();
        let opts = small()
            .listener(Some(events.clone()))
            .trace_sample_rate(rate)
            .seed(Some(99));
        let wal = Wal::open(dir.path(), opts).unwrap();
        let n = 20_000u64;
        let records: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
        let batch: Vec<Record<'_>> = records
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Record::new(p)
                    .correlation_id(i as u64)
                    .durability(Durability::Flush)
            })
            .collect();
        for r in wal.append_many(&batch) {
            r.unwrap();
        }
        wal.close().unwrap();
        let sampled: u64 = events
            .0
            .lock()
            .iter()
            .map(|e| e.correlation_ids.len() as u64)
            .sum();
        let mean = rate * n as f64;
        let sigma = (n as f64 * rate * (1.0 - rate)).sqrt();
        assert!(
            (sampled as f64 - mean).abs() <= 5.0 * sigma + 0.5,
            "rate {rate}: {sampled} sampled of {n}, expected {mean} ± {}",
            5.0 * sigma
        );
    }
}

#[test]
fn a_failed_group_reports_every_id_and_the_stats_say_poisoned() {
    let sim = SimStorage::new(3);
    let events = Arc::new(Collect::default());
    let opts = small()
        .storage(sim.clone())
        .listener(Some(events.clone()))
        .trace_sample_rate(0.0);
    let wal = Wal::open("log", opts).unwrap();
    wal.append(Record::new(b"ok").correlation_id(1u64)).unwrap();
    sim.fail_nth(FaultKind::SyncData, 1);
    let batch: Vec<Record<'_>> = (10..20u64)
        .map(|i| Record::new(b"doomed").correlation_id(i))
        .collect();
    for r in wal.append_many(&batch) {
        assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    }
    assert!(wal.stats().poisoned);
    assert_eq!(wal.stats().failed_groups, 1);
    let _ = wal.close();
    let events = events.0.lock().clone();
    let failed: Vec<_> = events.iter().filter(|e| e.error.is_some()).collect();
    assert_eq!(failed.len(), 1, "one failed group: {events:?}");
    let ids: HashSet<u128> = failed[0]
        .correlation_ids
        .iter()
        .map(|(_, id)| id.0)
        .collect();
    assert_eq!(
        ids,
        (10..20u128).collect(),
        "a failed group reports all its ids"
    );
    let ok = events
        .iter()
        .find(|e| e.error.is_none() && e.records > 0)
        .unwrap();
    assert!(
        ok.correlation_ids.is_empty(),
        "rate 0.0 samples no committed id"
    );
}

#[test]
fn stats_agree_with_what_was_appended() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut bytes = 0u64;
    for i in 0..300usize {
        let payload = vec![1u8; i % 50];
        let with_id = i % 2 == 0;
        let record = if with_id {
            Record::new(&payload).correlation_id(i as u64)
        } else {
            Record::new(&payload)
        };
        wal.append(record).unwrap();
        bytes += frame_len(payload.len(), with_id) as u64;
    }
    assert!(matches!(
        wal.append(Record::new(&vec![0u8; (64 << 10) + 1])),
        Err(Error::RecordTooLarge { .. })
    ));
    let s = wal.stats();
    assert_eq!(s.records, 300);
    assert_eq!(s.bytes, bytes);
    assert_eq!(s.rejected, 1);
    assert_eq!(s.group_records.sum, 300);
    assert_eq!(s.group_bytes.sum, bytes);
    assert_eq!(s.groups, s.group_records.count);
    assert!(s.syncs <= s.groups);
    // One append in eight per thread is timed; this thread made 300 (plus one rejected,
    // which counts as an append but records nothing).
    assert!(
        (37..=38).contains(&s.commit_ns.count),
        "{}",
        s.commit_ns.count
    );
    assert_eq!(s.queue_wait_ns.count, s.groups);
    assert!(!s.poisoned);
}

#[test]
fn a_record_without_an_id_costs_no_extra_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(Record::new(b"0123456789")).unwrap();
    let without = wal.stats().bytes;
    wal.append(Record::new(b"0123456789").correlation_id(5u64))
        .unwrap();
    let with = wal.stats().bytes - without;
    assert_eq!(
        without,
        17 + 10,
        "header + payload, nothing for an absent id"
    );
    assert_eq!(with, without + 16, "an id costs exactly its 16 bytes");
}
