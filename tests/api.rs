//! Small public APIs the CLI builds on: the segment listing, the naming helpers and option
//! validation without opening a log.

use groupwal::wal::{parse_segment_file_name, segment_file_name};
use groupwal::{Error, Record, Wal, WalOptions};

#[test]
fn segments_lists_every_segment_oldest_first_with_the_active_one_last() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default().segment_bytes(64 << 10)).unwrap();
    let payload = [7u8; 1000];
    for _ in 0..300 {
        wal.append(Record::new(&payload)).unwrap();
    }
    let segments = wal.segments();
    assert!(
        segments.len() >= 4,
        "300 KB in 64 KiB segments: {segments:?}"
    );
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(s.sealed, i + 1 < segments.len(), "only the last is active");
        assert_eq!(s.path, dir.path().join(segment_file_name(s.seq)));
        assert!(s.path.exists());
        let records: Vec<_> = wal.read_from(s.first_lsn).take(1).collect();
        assert_eq!(records[0].as_ref().unwrap().lsn, s.first_lsn);
    }
    assert!(segments.windows(2).all(|w| w[0].first_lsn < w[1].first_lsn));
    assert_eq!(segments[0].first_lsn, 1);
}

#[test]
fn segment_file_names_round_trip_and_foreign_names_are_rejected() {
    for seq in [1, 42, u64::MAX] {
        assert_eq!(parse_segment_file_name(&segment_file_name(seq)), Some(seq));
    }
    for name in [
        "1.wal",
        "00000000000000000001.wal.tmp",
        "0000000000000000000a.wal",
        "x",
    ] {
        assert_eq!(parse_segment_file_name(name), None, "{name}");
    }
}

#[test]
fn options_validate_without_opening_anything() {
    assert!(WalOptions::default().validate().is_ok());
    let bad = WalOptions::default().group_records_max(0).validate();
    assert!(
        matches!(
            bad,
            Err(Error::InvalidOptions {
                name: "group_records_max",
                ..
            })
        ),
        "{bad:?}"
    );
    let bad = WalOptions::default()
        .segment_bytes(1 << 20)
        .record_bytes_max(2 << 20);
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidOptions {
            name: "record_bytes_max",
            ..
        })
    ));
}
