//! A Raft cluster in one process for tests, the example and the bench: each node has its
//! own groupwal directory and listens on its own loopback TCP port; nodes talk through a
//! tiny RPC (a little-endian `u32` length, then JSON) over those sockets, so every message
//! really crosses the kernel's network stack. Shared by `tests/raft_cluster.rs`,
//! `examples/raft_cluster.rs` and `benches/raft.rs` through `#[path]`.
#![allow(dead_code)]
// openraft's network traits return its `RPCError` (about 250 bytes).
#![allow(clippy::result_large_err)]

use groupwal::raft::kv::{KvConfig, KvRequest, KvStateMachine};
use groupwal::raft::{GroupwalLogStore, LogStoreOptions, OpenError, RaftLogStats};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Largest RPC frame accepted (a bound on what a peer can make us allocate).
const FRAME_BYTES_MAX: usize = 64 << 20;

pub type NodeId = u64;

#[derive(Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<KvConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<KvConfig>),
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream
        .write_all(&(bytes.len() as u32).to_le_bytes())
        .await?;
    stream.write_all(bytes).await
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Makes a client per target; clients connect lazily and reconnect after any error.
#[derive(Clone, Default)]
pub struct TcpNetworkFactory;

pub struct TcpNetwork {
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
}

impl RaftNetworkFactory<KvConfig> for TcpNetworkFactory {
    type Network = TcpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpNetwork {
        TcpNetwork {
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

/// A failed call: could not connect (the peer is down) or failed after connecting.
enum CallError {
    Unreachable(io::Error),
    Network(io::Error),
}

impl TcpNetwork {
    async fn call<Resp: DeserializeOwned>(
        &mut self,
        rpc: &Rpc,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let request = serde_json::to_vec(rpc).map_err(|e| CallError::Network(e.into()))?;
        let attempt = async {
            if self.conn.is_none() {
                let stream = TcpStream::connect(&self.addr)
                    .await
                    .map_err(CallError::Unreachable)?;
                stream.set_nodelay(true).map_err(CallError::Network)?;
                self.conn = Some(stream);
            }
            // Just set above.
            let stream = self.conn.as_mut().expect("connected");
            write_frame(stream, &request)
                .await
                .map_err(CallError::Network)?;
            let bytes = read_frame(stream).await.map_err(CallError::Network)?;
            serde_json::from_slice(&bytes).map_err(|e| CallError::Network(e.into()))
        };
        let result = match tokio::time::timeout(ttl, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Network(io::Error::new(
                io::ErrorKind::TimedOut,
                "rpc timed out",
            ))),
        };
        if result.is_err() {
            // A half-used connection cannot be trusted: reconnect next time.
            self.conn = None;
        }
        result
    }
}

fn rpc_result<T, E>(
    target: NodeId,
    result: Result<Result<T, RaftError<NodeId, E>>, CallError>,
) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
where
    E: std::error::Error,
{
    match result {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(target, remote))),
        Err(CallError::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        Err(CallError::Network(e)) => Err(RPCError::Network(NetworkError::new(&e))),
    }
}

impl RaftNetwork<KvConfig> for TcpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let r = self.call(&Rpc::Append(rpc), option.hard_ttl()).await;
        rpc_result(self.target, r)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let r = self.call(&Rpc::Snapshot(rpc), option.hard_ttl()).await;
        rpc_result(self.target, r)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let r = self.call(&Rpc::Vote(rpc), option.hard_ttl()).await;
        rpc_result(self.target, r)
    }
}

/// Serves one peer connection until it closes.
async fn serve_conn(mut stream: TcpStream, raft: Raft<KvConfig>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let bytes = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let rpc: Rpc = serde_json::from_slice(&bytes)?;
        let response = match rpc {
            Rpc::Append(req) => serde_json::to_vec(&raft.append_entries(req).await),
            Rpc::Vote(req) => serde_json::to_vec(&raft.vote(req).await),
            Rpc::Snapshot(req) => serde_json::to_vec(&raft.install_snapshot(req).await),
        }?;
        write_frame(&mut stream, &response).await?;
    }
}

/// Accepts peers; aborting the task drops the listener and every connection.
async fn serve(listener: TcpListener, raft: Raft<KvConfig>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_conn(stream, raft.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A running node.
pub struct Node {
    pub raft: Raft<KvConfig>,
    pub sm: KvStateMachine,
    pub store: GroupwalLogStore<KvConfig>,
    server: JoinHandle<()>,
}

/// Three (or any number of) nodes, each with its own directory under `root`.
pub struct Cluster {
    root: PathBuf,
    addrs: BTreeMap<NodeId, SocketAddr>,
    nodes: Mutex<BTreeMap<NodeId, Arc<Node>>>,
    options: LogStoreOptions,
    config: Arc<Config>,
}

/// Raft timing for a loopback cluster: fast elections so a leader change takes well under
/// a second.
pub fn raft_config() -> Arc<Config> {
    let config = Config {
        cluster_name: "groupwal".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Snapshots and purges are exercised by the conformance and crash tests; this
        // state machine keeps no snapshot across restarts, so the cluster keeps its log.
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

impl Cluster {
    /// Starts nodes `ids` under `root` and initializes the cluster from the first.
    pub async fn start(
        root: &Path,
        ids: &[NodeId],
        options: LogStoreOptions,
    ) -> io::Result<Cluster> {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for &id in ids {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(id, listener.local_addr()?);
            listeners.insert(id, listener);
        }
        let cluster = Cluster {
            root: root.to_path_buf(),
            addrs,
            nodes: Mutex::new(BTreeMap::new()),
            options,
            config: raft_config(),
        };
        for (id, listener) in listeners {
            cluster.start_with(id, listener).await?;
        }
        let members: BTreeMap<NodeId, BasicNode> = cluster
            .addrs
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr.to_string())))
            .collect();
        cluster
            .raft(ids[0])
            .expect("just started")
            .initialize(members)
            .await
            .map_err(io::Error::other)?;
        Ok(cluster)
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    async fn start_with(&self, id: NodeId, listener: TcpListener) -> io::Result<()> {
        // The previous incarnation's last handles (replication tasks ending) may still hold
        // the directory lock for a moment after shutdown.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match GroupwalLogStore::<KvConfig>::open(self.dir(id), self.options.clone()) {
                Ok(store) => break store,
                Err(OpenError::Wal(groupwal::Error::Locked { .. }))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        };
        let sm = KvStateMachine::new();
        let raft = Raft::new(
            id,
            self.config.clone(),
            TcpNetworkFactory,
            store.clone(),
            sm.clone(),
        )
        .await
        .map_err(io::Error::other)?;
        let server = tokio::spawn(serve(listener, raft.clone()));
        self.nodes.lock().insert(
            id,
            Arc::new(Node {
                raft,
                sm,
                store,
                server,
            }),
        );
        Ok(())
    }

    /// Restarts node `id` from its directory, on its old address.
    pub async fn restart(&self, id: NodeId) -> io::Result<()> {
        let addr = self.addrs[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.start_with(id, listener).await
    }

    /// Stops node `id`: its listener and connections go away and its Raft shuts down,
    /// dropping the log store (whatever the WAL had queued is written and synced).
    pub async fn kill(&self, id: NodeId) {
        let node = self.nodes.lock().remove(&id);
        if let Some(node) = node {
            node.server.abort();
            let _ = node.raft.shutdown().await;
        }
    }

    pub fn raft(&self, id: NodeId) -> Option<Raft<KvConfig>> {
        self.nodes.lock().get(&id).map(|n| n.raft.clone())
    }

    pub fn node(&self, id: NodeId) -> Option<Arc<Node>> {
        self.nodes.lock().get(&id).cloned()
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.lock().keys().copied().collect()
    }

    /// The leader some running node knows of, if it is running.
    pub fn leader(&self) -> Option<NodeId> {
        let nodes = self.nodes.lock();
        nodes
            .values()
            .filter_map(|n| n.raft.metrics().borrow().current_leader)
            .find(|l| nodes.contains_key(l))
    }

    /// Waits until a running node leads, for at most `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Writes through the leader, retrying (on another leader if it changed) until
    /// `deadline`. `Ok` means committed and applied on the leader: acknowledged.
    pub async fn write(
        &self,
        req: KvRequest,
        deadline: Instant,
    ) -> Result<ClientWriteResponse<KvConfig>, String> {
        let mut last = String::from("no leader");
        while Instant::now() < deadline {
            let raft = self.leader().and_then(|l| self.raft(l));
            if let Some(raft) = raft {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, raft.client_write(req.clone())).await {
                    Ok(Ok(resp)) => return Ok(resp),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(last)
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let raft = self.raft(id).ok_or("node not running")?;
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Log store statistics of every running node.
    pub fn stats(&self) -> BTreeMap<NodeId, RaftLogStats> {
        self.nodes
            .lock()
            .iter()
            .map(|(&id, n)| (id, n.store.stats()))
            .collect()
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}
