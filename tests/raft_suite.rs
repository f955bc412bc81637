//! openraft's own storage conformance suite (`openraft::testing::Suite`), run against the
//! groupwal log store with the in-memory key-value state machine. Each of the suite's cases
//! is its own test here, so a failure names the case; each builds a fresh store in a fresh
//! directory on the real file system.

use groupwal::raft::kv::{KvConfig, KvStateMachine};
use groupwal::raft::{GroupwalLogStore, LogStoreOptions};
use groupwal::WalOptions;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<KvConfig, GroupwalLogStore<KvConfig>, KvStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, GroupwalLogStore<KvConfig>, KvStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        // Small segments so purges in the suite remove whole segments.
        let options = LogStoreOptions::default().wal(
            WalOptions::default()
                .segment_bytes(64 << 10)
                .record_bytes_max(32 << 10),
        );
        let store = GroupwalLogStore::open(dir.path().join("log"), options)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, store, KvStateMachine::new()))
    }
}

type S = Suite<KvConfig, GroupwalLogStore<KvConfig>, KvStateMachine, Builder, TempDir>;

/// Runs one case of the suite on a fresh store, on its own runtime (as the suite does).
fn run<F, Fu>(case: F)
where
    F: FnOnce(GroupwalLogStore<KvConfig>, KvStateMachine) -> Fu,
    Fu: std::future::Future<Output = Result<(), StorageError<u64>>>,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_dir, store, sm) = Builder.build().await.unwrap();
        case(store, sm).await.unwrap();
    });
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(S::$name);
            }
        )*
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[test]
fn transfer_snapshot() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(S::transfer_snapshot(&Builder)).unwrap();
}

/// The suite's own entry point, all cases in one go, exactly as openraft documents it.
#[test]
fn test_all() {
    S::test_all(Builder).unwrap();
}
