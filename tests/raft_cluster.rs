//! A real three-node Raft cluster on groupwal logs, in one process over loopback TCP.
//!
//! Clients write concurrently through the leader. A follower is stopped, the cluster goes on
//! without it, and it is restarted from its directory: it must come back with the log it
//! had and catch up. Then the leader is stopped while clients are writing: a new leader is
//! elected, clients retry on it, the old leader restarts from its directory and catches up.
//! At the end every write that was acknowledged must be in every node's state machine.
//!
//! Stopping a node here is `Raft::shutdown` plus dropping its log store (its WAL closes
//! cleanly); power cuts are covered by `tests/raft_crash.rs` on the simulated storage.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{Cluster, NodeId};
use groupwal::raft::kv::KvRequest;
use groupwal::raft::LogStoreOptions;
use groupwal::WalOptions;
use openraft::storage::RaftLogStorage;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;

/// Every wait in this test is bounded by this (and the whole test by `TEST_TIMEOUT`).
const WAIT: Duration = Duration::from_secs(15);
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn options() -> LogStoreOptions {
    LogStoreOptions::default().wal(WalOptions::default().segment_bytes(1 << 20))
}

/// `CLIENTS` concurrent clients, `per_client` writes each; returns the acknowledged ones.
fn clients(
    cluster: &Arc<Cluster>,
    phase: &str,
    per_client: usize,
) -> Vec<tokio::task::JoinHandle<Vec<(String, String)>>> {
    (0..CLIENTS)
        .map(|c| {
            let cluster = cluster.clone();
            let phase = phase.to_string();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..per_client {
                    let req = KvRequest {
                        key: format!("{phase}-c{c}-{i}"),
                        value: format!("value of {phase} {c} {i}"),
                    };
                    let deadline = Instant::now() + WAIT;
                    match cluster.write(req.clone(), deadline).await {
                        Ok(_) => acked.push((req.key, req.value)),
                        Err(e) => panic!("{} not acknowledged within {WAIT:?}: {e}", req.key),
                    }
                }
                acked
            })
        })
        .collect()
}

async fn collect(
    handles: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
    acked: &mut BTreeMap<String, String>,
) {
    for h in handles {
        acked.extend(h.await.expect("client task"));
    }
}

/// The last log index in node `id`'s log store (read from the store, not from metrics,
/// which a just-started node may not have published yet).
async fn last_log_index(cluster: &Cluster, id: NodeId) -> Option<u64> {
    let mut store = cluster.node(id)?.store.clone();
    let state = store.get_log_state().await.expect("log state");
    state.last_log_id.map(|l| l.index)
}

/// Waits until every running node has applied what the leader has applied.
async fn catch_up(cluster: &Cluster) -> u64 {
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let raft = cluster.raft(leader).expect("leader running");
    let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    for id in cluster.running() {
        cluster
            .wait_applied(id, applied, WAIT)
            .await
            .unwrap_or_else(|e| panic!("node {id} did not catch up: {e}"));
    }
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_acknowledged_across_restarts_and_a_leader_change() {
    tokio::time::timeout(TEST_TIMEOUT, scenario())
        .await
        .expect("the scenario finishes in time");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(
        Cluster::start(dir.path(), &[1, 2, 3], options())
            .await
            .unwrap(),
    );
    let mut acked = BTreeMap::new();
    let first_leader = cluster.wait_leader(WAIT).await.expect("a first leader");

    // Phase 1: all three up.
    collect(clients(&cluster, "all-up", 25), &mut acked).await;

    // Phase 2: a follower stops; the other two still make a majority.
    let follower = *cluster
        .running()
        .iter()
        .find(|&&id| id != first_leader)
        .unwrap();
    catch_up(&cluster).await;
    let follower_log = last_log_index(&cluster, follower)
        .await
        .expect("follower has a log");
    cluster.kill(follower).await;
    collect(clients(&cluster, "follower-down", 15), &mut acked).await;

    // The follower restarts from its directory with the log it had, then catches up.
    cluster.restart(follower).await.unwrap();
    let recovered = last_log_index(&cluster, follower)
        .await
        .expect("restarted follower has a log");
    assert!(
        recovered >= follower_log,
        "node {follower} recovered its log from disk: {recovered} >= {follower_log}"
    );
    catch_up(&cluster).await;

    // Phase 3: the leader stops while clients write; they retry on the new leader.
    let old_leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let writers = clients(&cluster, "leader-change", 20);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let leader_log = last_log_index(&cluster, old_leader)
        .await
        .expect("leader has a log");
    cluster.kill(old_leader).await;
    collect(writers, &mut acked).await;
    let new_leader = cluster.wait_leader(WAIT).await.expect("a new leader");
    assert_ne!(new_leader, old_leader, "leadership changed");

    // The old leader restarts from its directory and catches up.
    cluster.restart(old_leader).await.unwrap();
    let recovered = last_log_index(&cluster, old_leader).await.expect("a log");
    assert!(
        recovered >= leader_log,
        "node {old_leader} recovered its log from disk: {recovered} >= {leader_log}"
    );
    collect(clients(&cluster, "all-back", 10), &mut acked).await;
    let applied = catch_up(&cluster).await;

    // Nothing acknowledged is lost, on any node.
    assert_eq!(acked.len(), CLIENTS * (25 + 15 + 20 + 10));
    for id in cluster.running() {
        let node = cluster.node(id).unwrap();
        let map = node.sm.snapshot_map();
        for (key, value) in &acked {
            assert_eq!(
                map.get(key),
                Some(value),
                "node {id} lost acknowledged write {key} (applied up to {applied})"
            );
        }
    }
    let stats = cluster.stats();
    for (id, s) in &stats {
        eprintln!(
            "node {id}: {} append calls, {} entries, {} meta records, {} fdatasyncs",
            s.append_calls, s.entries, s.meta_records, s.wal.syncs
        );
    }
    cluster.shutdown().await;
}
