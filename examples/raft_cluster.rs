//! Three Raft nodes on groupwal logs, in one process over loopback TCP.
//!
//! ```sh
//! cargo run --release --features openraft --example raft_cluster [DIR]
//! ```
//!
//! Each node keeps its Raft log in `DIR/node-N` (a temporary directory by default). The
//! example writes through the leader, stops a follower and restarts it from its directory,
//! stops the leader so another is elected, restarts it, and checks that every acknowledged
//! write is on every node.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use cluster::Cluster;
use groupwal::raft::kv::KvRequest;
use groupwal::raft::LogStoreOptions;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn write_many(
    cluster: &Cluster,
    prefix: &str,
    n: usize,
    acked: &mut BTreeMap<String, String>,
) {
    for i in 0..n {
        let req = KvRequest {
            key: format!("{prefix}-{i}"),
            value: format!("{prefix} value {i}"),
        };
        match cluster.write(req.clone(), Instant::now() + WAIT).await {
            Ok(resp) => {
                if i == 0 {
                    println!("  {} committed at log index {}", req.key, resp.log_id.index);
                }
                acked.insert(req.key, req.value);
            }
            Err(e) => println!("  {} not acknowledged: {e}", req.key),
        }
    }
    println!("  {n} writes of '{prefix}' acknowledged");
}

async fn catch_up(cluster: &Cluster) {
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let applied = cluster
        .raft(leader)
        .expect("running")
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    for id in cluster.running() {
        cluster
            .wait_applied(id, applied, WAIT)
            .await
            .expect("catch up");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    println!("starting nodes 1, 2, 3 under {}", root.display());
    let cluster = Cluster::start(&root, &[1, 2, 3], LogStoreOptions::default()).await?;
    let leader = cluster.wait_leader(WAIT).await.ok_or("no leader")?;
    println!("node {leader} leads");

    let mut acked = BTreeMap::new();
    write_many(&cluster, "first", 100, &mut acked).await;

    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap();
    println!("stopping follower {follower}");
    cluster.kill(follower).await;
    write_many(&cluster, "without-follower", 100, &mut acked).await;
    println!(
        "restarting node {follower} from {}",
        cluster.dir(follower).display()
    );
    cluster.restart(follower).await?;
    catch_up(&cluster).await;
    println!("node {follower} caught up");

    println!("stopping leader {leader}");
    cluster.kill(leader).await;
    let new_leader = cluster.wait_leader(WAIT).await.ok_or("no new leader")?;
    println!("node {new_leader} leads now");
    write_many(&cluster, "new-leader", 100, &mut acked).await;
    println!("restarting node {leader}");
    cluster.restart(leader).await?;
    catch_up(&cluster).await;

    let mut lost = 0;
    for id in cluster.running() {
        let map = cluster.node(id).unwrap().sm.snapshot_map();
        lost += acked
            .iter()
            .filter(|(k, v)| map.get(*k) != Some(*v))
            .count();
    }
    for (id, s) in cluster.stats() {
        println!(
            "node {id} (since its last start): {} entries in {} append calls, {} fdatasyncs",
            s.entries, s.append_calls, s.wal.syncs
        );
    }
    println!(
        "{} writes acknowledged, {lost} missing on some node",
        acked.len()
    );
    cluster.shutdown().await;
    if lost > 0 {
        return Err("acknowledged writes were lost".into());
    }
    Ok(())
}
