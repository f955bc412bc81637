//! Crash tests of the Raft log store on the simulated storage: random sequences of appends,
//! truncations, purges, votes and committed ids, with power cuts (clean and torn) between
//! and in the middle of them. After every reopen the store must hold exactly what was
//! acknowledged: every acknowledged entry, no truncated or purged entry, the last vote and
//! committed id. An append still in flight at the crash may survive only as a prefix.

use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::raft::kv::{KvConfig, KvRequest};
use groupwal::raft::{GroupwalLogStore, LogStoreOptions};
use groupwal::WalOptions;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use std::sync::Arc;

type Store = GroupwalLogStore<KvConfig>;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(KvRequest {
            key: format!("k{index}"),
            value: format!("t{term}-{}", "x".repeat((index % 7 * 300) as usize)),
        }),
    }
}

/// What the store must hold: entries above `purged`, consecutive.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    /// `(term, index)` of the live entries.
    entries: Vec<(u64, u64)>,
    purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

impl Model {
    fn next_index(&self) -> u64 {
        match (self.entries.last(), &self.purged) {
            (Some(&(_, i)), _) => i + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => 0,
        }
    }
}

fn options(sim: &Arc<SimStorage>) -> LogStoreOptions {
    LogStoreOptions::default()
        .wal(
            WalOptions::default()
                .storage(sim.clone())
                .segment_bytes(64 << 10)
                .record_bytes_max(16 << 10)
                .seed(Some(1)),
        )
        // Tiny cache: most reads go back to the WAL.
        .cache_entries_max(4)
}

fn open(sim: &Arc<SimStorage>) -> Store {
    Store::open("raft", options(sim)).expect("reopen after a crash")
}

/// Cuts the power (`mode`) under `store` and reopens the store.
fn power_cut(sim: &Arc<SimStorage>, store: Store, mode: CrashMode) -> Store {
    sim.crash(mode);
    drop(store);
    open(sim)
}

/// `Torn` or `Clean`, alike.
fn any_crash_mode(rng: &mut fastrand::Rng) -> CrashMode {
    if rng.bool() {
        CrashMode::Torn
    } else {
        CrashMode::Clean
    }
}

/// Reads the whole store and compares it with the model.
async fn check(store: &mut Store, model: &Model, context: &str) {
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, model.purged, "{context}: purged");
    let last = model
        .entries
        .last()
        .map(|&(t, i)| log_id(t, i))
        .or(model.purged);
    assert_eq!(state.last_log_id, last, "{context}: last log id");
    let got = store.try_get_log_entries(0..u64::MAX).await.unwrap();
    let want: Vec<Entry<KvConfig>> = model.entries.iter().map(|&(t, i)| entry(t, i)).collect();
    assert_eq!(got.len(), want.len(), "{context}: entry count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.log_id, w.log_id, "{context}: log id");
        assert_eq!(format!("{g:?}"), format!("{w:?}"), "{context}: payload");
    }
    assert_eq!(
        store.read_vote().await.unwrap(),
        model.vote,
        "{context}: vote"
    );
    assert_eq!(
        store.read_committed().await.unwrap(),
        model.committed,
        "{context}: committed"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct NoWake;

impl std::task::Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// Appends without waiting for the callback (the entries are in flight at a crash): polls
/// the append once. The store does all its work in that poll; only the wait for the
/// callback is cut short.
fn append_in_flight(store: &mut Store, entries: Vec<Entry<KvConfig>>) {
    use std::future::Future;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut append = std::pin::pin!(store.blocking_append(entries));
    let _ = append.as_mut().poll(&mut cx);
}

#[test]
fn random_operations_and_power_cuts_recover_exactly_what_was_acknowledged() {
    let rt = runtime();
    for seed in 0..12u64 {
        rt.block_on(random_run(seed));
    }
}

async fn random_run(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim = SimStorage::new(seed);
    let mut store = open(&sim);
    let mut model = Model::default();
    let mut term = 1u64;
    for step in 0..300 {
        let context = format!("seed {seed} step {step}");
        match rng.u32(0..100) {
            0..=44 => {
                let first = model.next_index();
                let n = rng.u64(1..6);
                let batch: Vec<_> = (first..first + n).map(|i| entry(term, i)).collect();
                store.blocking_append(batch).await.unwrap();
                model.entries.extend((first..first + n).map(|i| (term, i)));
            }
            45..=54 if !model.entries.is_empty() => {
                // Drop a suffix of the uncommitted entries; the next leader's term follows.
                let lowest = model.committed.map_or(0, |c| c.index + 1);
                let candidates: Vec<u64> = model
                    .entries
                    .iter()
                    .map(|&(_, i)| i)
                    .filter(|&i| i >= lowest)
                    .collect();
                if let Some(&since) = candidates.get(rng.usize(0..candidates.len().max(1))) {
                    store.truncate(log_id(term, since)).await.unwrap();
                    model.entries.retain(|&(_, i)| i < since);
                    term += 1;
                }
            }
            55..=64 if !model.entries.is_empty() => {
                let k = rng.usize(0..model.entries.len());
                let (t, i) = model.entries[k];
                store.purge(log_id(t, i)).await.unwrap();
                model.entries.drain(..=k);
                model.purged = Some(log_id(t, i));
            }
            65..=74 => {
                term += 1;
                let vote = Vote::new(term, rng.u64(1..4));
                store.save_vote(&vote).await.unwrap();
                model.vote = Some(vote);
            }
            75..=84 if !model.entries.is_empty() => {
                let k = rng.usize(0..model.entries.len());
                let (t, i) = model.entries[k];
                let committed = Some(log_id(t, i)).max(model.committed);
                store.save_committed(committed).await.unwrap();
                model.committed = committed;
            }
            85..=92 => {
                // An append in flight, then power is cut.
                let first = model.next_index();
                let n = rng.u64(1..8);
                append_in_flight(
                    &mut store,
                    (first..first + n).map(|i| entry(term, i)).collect(),
                );
                store = power_cut(&sim, store, any_crash_mode(&mut rng));
                let state = store.get_log_state().await.unwrap();
                let last = state.last_log_id.map_or(0, |l| l.index + 1);
                // Whatever survived of the batch is a prefix of it.
                let survived = last.saturating_sub(first).min(n);
                model
                    .entries
                    .extend((first..first + survived).map(|i| (term, i)));
                check(
                    &mut store,
                    &model,
                    &format!("{context} after in-flight crash"),
                )
                .await;
            }
            _ => {
                store = power_cut(&sim, store, any_crash_mode(&mut rng));
                check(&mut store, &model, &format!("{context} after crash")).await;
            }
        }
    }
    check(&mut store, &model, &format!("seed {seed} end")).await;
    let mut store = power_cut(&sim, store, CrashMode::Torn);
    check(&mut store, &model, &format!("seed {seed} end, reopened")).await;
}

/// Fills the store with `n` entries of term 1 from index 0, a vote and a committed id
/// written first (so they live in the oldest segment).
async fn filled(sim: &Arc<SimStorage>, n: u64) -> (Store, Model) {
    let mut store = open(sim);
    let vote = Vote::new_committed(1, 1);
    store.save_vote(&vote).await.unwrap();
    store.save_committed(Some(log_id(1, 0))).await.unwrap();
    for i in 0..n {
        store.blocking_append([entry(1, i)]).await.unwrap();
    }
    let model = Model {
        entries: (0..n).map(|i| (1, i)).collect(),
        purged: None,
        vote: Some(vote),
        committed: Some(log_id(1, 0)),
    };
    (store, model)
}

#[test]
fn purge_removes_whole_segments_and_keeps_the_vote_and_committed_id_they_held() {
    runtime().block_on(async {
        let sim = SimStorage::new(5);
        let (mut store, mut model) = filled(&sim, 300).await;
        let first_lsn = store.wal().first_lsn();
        store.purge(log_id(1, 249)).await.unwrap();
        assert!(
            store.wal().first_lsn() > first_lsn,
            "purging most of the log removed segments"
        );
        model.entries.drain(..250);
        model.purged = Some(log_id(1, 249));
        check(&mut store, &model, "after purge").await;
        let mut store = power_cut(&sim, store, CrashMode::Clean);
        check(&mut store, &model, "after purge and crash").await;
        // Purging everything leaves an empty log whose last log id is the purged one.
        store.purge(log_id(1, 299)).await.unwrap();
        model.entries.clear();
        model.purged = Some(log_id(1, 299));
        let mut store = power_cut(&sim, store, CrashMode::Torn);
        check(&mut store, &model, "after purging everything").await;
        store.blocking_append([entry(2, 300)]).await.unwrap();
        model.entries.push((2, 300));
        check(&mut store, &model, "appending after purging everything").await;
    });
}

/// A purge whose segment removal fails or is cut short by a crash part way: the marker is
/// durable before any removal, so recovery applies the purge whatever was removed. The
/// first two freed segments are renamed into the pool of files kept for reuse
/// (`recycle_segments`, default 2), the others deleted: faults hit both.
#[test]
fn a_crash_in_the_middle_of_a_purge_keeps_the_purge_and_everything_after_it() {
    let rt = runtime();
    for (fault, nth) in [
        (FaultKind::Rename, 1),
        (FaultKind::Rename, 2),
        (FaultKind::Remove, 1),
        (FaultKind::Remove, 2),
        (FaultKind::SyncDir, 1),
    ] {
        for mode in [CrashMode::Clean, CrashMode::Torn] {
            rt.block_on(async {
                let sim = SimStorage::new(nth);
                let (mut store, mut model) = filled(&sim, 300).await;
                sim.fail_nth(fault, nth);
                let result = store.purge(log_id(1, 249)).await;
                assert!(
                    result.is_err(),
                    "{fault:?} {nth}: the injected fault surfaces"
                );
                let mut store = power_cut(&sim, store, mode);
                model.entries.drain(..250);
                model.purged = Some(log_id(1, 249));
                check(&mut store, &model, &format!("{fault:?} #{nth} {mode:?}")).await;
            });
        }
    }
}

/// A truncation whose marker's sync fails and is followed by a power cut: after recovery
/// the suffix is either entirely there or entirely gone, never in part, and nothing else
/// changed.
#[test]
fn a_crash_during_truncate_is_all_or_nothing() {
    let rt = runtime();
    let mut outcomes = [0u32; 2];
    for seed in 0..16u64 {
        rt.block_on(async {
            let sim = SimStorage::new(seed);
            let (mut store, model) = filled(&sim, 40).await;
            sim.fail_nth(FaultKind::SyncData, 1);
            let result = store.truncate(log_id(1, 30)).await;
            assert!(result.is_err(), "the failed sync surfaces");
            sim.crash_with_seed(CrashMode::Torn, seed);
            drop(store);
            let mut store = open(&sim);
            let mut truncated = model.clone();
            truncated.entries.truncate(30);
            let last = store.get_log_state().await.unwrap().last_log_id;
            if last == Some(log_id(1, 39)) {
                outcomes[0] += 1;
                check(&mut store, &model, "truncate lost").await;
            } else {
                outcomes[1] += 1;
                check(&mut store, &truncated, "truncate kept").await;
            }
            // Either way the log goes on from there.
            let next = if last == Some(log_id(1, 39)) { 40 } else { 30 };
            store.blocking_append([entry(2, next)]).await.unwrap();
        });
    }
    eprintln!(
        "truncate lost in {} runs, kept in {}",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[0] > 0, "some seed loses the unsynced marker");
    assert!(outcomes[1] > 0, "some seed keeps the unsynced marker");
}

/// Truncated entries stay out after any number of reopenings, even though their bytes are
/// still in the WAL before the marker, and entries appended after the truncation replace
/// them.
#[test]
fn truncated_entries_never_come_back() {
    runtime().block_on(async {
        let sim = SimStorage::new(9);
        let (mut store, mut model) = filled(&sim, 20).await;
        store.truncate(log_id(1, 10)).await.unwrap();
        store
            .blocking_append((10..15).map(|i| entry(2, i)))
            .await
            .unwrap();
        store.truncate(log_id(2, 12)).await.unwrap();
        store
            .blocking_append((12..18).map(|i| entry(3, i)))
            .await
            .unwrap();
        model.entries.truncate(10);
        model.entries.extend((10..12).map(|i| (2, i)));
        model.entries.extend((12..18).map(|i| (3, i)));
        for round in 0..3 {
            store = power_cut(&sim, store, CrashMode::Torn);
            check(&mut store, &model, &format!("reopen {round}")).await;
        }
    });
}
