use groupwal::{Durability, Record, Wal, WalOptions};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let threads: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let per: usize = std::env::args().nth(3).unwrap().parse().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let opts = WalOptions::default()
        .segment_bytes(4 << 20)
        .record_bytes_max(1 << 20);
    let wal = Arc::new(Wal::open(&dir, opts.clone()).unwrap());
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut lsns = vec![];
                for i in 0..per {
                    let d = match (t + i) % 3 {
                        0 => Durability::Sync,
                        1 => Durability::Flush,
                        _ => Durability::Buffer,
                    };
                    let payload = vec![t as u8; 116];
                    let r = wal.append(Record::new(&payload).durability(d)).unwrap();
                    lsns.push(r.lsn);
                }
                lsns
            })
        })
        .collect();
    let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let el = t0.elapsed();
    all.sort();
    let n = all.len();
    assert!(
        all.iter().enumerate().all(|(i, &l)| l == i as u64 + 1),
        "dense"
    );
    let s = wal.stats();
    println!(
        "{} commits in {:?}: {:.0}/s groups {} syncs {} mean grp {:.1}",
        n,
        el,
        n as f64 / el.as_secs_f64(),
        s.groups,
        s.syncs,
        s.group_records.mean()
    );
    wal.close().unwrap();
    drop(wal);
    let wal = Wal::open(&dir, opts).unwrap();
    let got: Vec<_> = wal.read_from(1).map(|r| r.unwrap().lsn).collect();
    assert_eq!(got.len(), n, "reopen count");
    println!(
        "reopen ok: {} records, report {:?}",
        got.len(),
        wal.recovery_report()
    );
}
