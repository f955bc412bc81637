//! Regression: recovery deleted every `*.tmp` entry of the log directory.
//!
//! The story. Segment creation writes `<seq>.wal.tmp`, syncs it and renames it into place;
//! recovery removes leftovers of creations a crash interrupted. It recognised them by the
//! suffix alone: any name ending in `.tmp`. Consumers brought folders of their own into the
//! log directory (`consumers/`, `dead-letter/`), and with them the question of what recovery
//! does with names it did not make. The answer was bad for `.tmp` names: a user's
//! `notes.tmp` (or an editor's swap file, or another tool's temporary file) was deleted on
//! the next open, and a *directory* with such a name made every writable open fail
//! (`remove_file` on a directory). Recovery now removes only what segment creation makes,
//! `<20 digits>.wal.tmp`, and leaves every other entry alone.

use groupwal::{Record, Wal, WalOptions};

fn small() -> WalOptions {
    WalOptions::default().segment_bytes(1 << 20)
}

#[test]
fn recovery_removes_only_its_own_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(Record::new(b"kept")).unwrap();
    wal.close().unwrap();
    drop(wal);
    let own = dir.path().join(format!("{:020}.wal.tmp", 2));
    let notes = dir.path().join("notes.tmp");
    let scratch = dir.path().join("scratch.tmp");
    std::fs::write(&own, b"an interrupted segment creation").unwrap();
    std::fs::write(&notes, b"not the log's").unwrap();
    std::fs::create_dir(&scratch).unwrap();

    let wal = Wal::open(dir.path(), small()).expect("a foreign directory does not stop opening");
    assert_eq!(wal.recovery_report().temp_files_removed, 1);
    assert!(!own.exists(), "the leftover segment creation is removed");
    assert!(notes.exists(), "a foreign file is left alone");
    assert!(scratch.is_dir(), "a foreign directory is left alone");
    let records: Vec<_> = wal.read_from(1).map(|r| r.unwrap().payload).collect();
    assert_eq!(records, vec![b"kept".to_vec()]);
}
