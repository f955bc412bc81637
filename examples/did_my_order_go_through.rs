//! "Did my order go through?" — following one request across the batch boundary.
//!
//! Eight threads append orders, each tagged with a correlation id (think: the W3C trace id of
//! the HTTP request that placed it). Their records are committed in shared groups, so a
//! log line like "batch of 437 committed" says nothing about one order. The receipt and the
//! group events give the trail back:
//!
//! 1. the caller logs its receipt: correlation id → LSN, group id, group size;
//! 2. the group event (sampled ids, always all ids of a failed group) says when that group
//!    became durable and how long it took;
//! 3. `durable_lsn()` says whether the LSN is durable now;
//! 4. the record on disk carries the id, so a reader (or `groupwal inspect DIR
//!    --correlation ID`) finds it even without the log line.
//!
//! `cargo run --example did_my_order_go_through`

use groupwal::{CorrelationId, GroupEvent, GroupListener, Record, Wal, WalOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Keeps the last events by group id, as a metrics or tracing pipeline would.
#[derive(Default)]
struct GroupLog(Mutex<HashMap<u64, GroupEvent>>);

impl GroupListener for GroupLog {
    fn on_group(&self, event: &GroupEvent) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(event.group_id, event.clone());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let groups = Arc::new(GroupLog::default());
    let options = WalOptions::default()
        .segment_bytes(8 << 20)
        .listener(Some(groups.clone()))
        .trace_sample_rate(0.05);
    let wal = Arc::new(Wal::open(dir.path(), options)?);

    // The order service: each request appends its order, tagged with its trace id.
    let the_order = CorrelationId(0x4bf92f3577b34da6a3ce929d0e0e4736);
    let handles: Vec<_> = (0..8u128)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || -> groupwal::Result<Option<String>> {
                let mut my_line = None;
                for i in 0..500u128 {
                    let id = if t == 3 && i == 250 {
                        the_order
                    } else {
                        CorrelationId(t << 64 | i)
                    };
                    let body = format!("{{\"order\":{},\"sku\":\"A-{i}\"}}", id);
                    let receipt = wal.append(Record::new(body.as_bytes()).correlation_id(id))?;
                    if id == the_order {
                        // Step 1: the caller's own log line.
                        my_line = Some(format!(
                            "order {id} committed: LSN {}, group {} of {} records",
                            receipt.lsn, receipt.group_id, receipt.group_records
                        ));
                    }
                }
                Ok(my_line)
            })
        })
        .collect();
    let mut line = None;
    for h in handles {
        if let Some(l) = h.join().expect("writer thread")? {
            line = Some(l);
        }
    }
    let line = line.expect("thread 3 appended the order");
    println!("caller's log:   {line}");

    // Step 2: the group. The line names it; the event says what happened to it.
    let group_id: u64 = line
        .split("group ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()?;
    let lsn: u64 = line
        .split("LSN ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()?;
    wal.close()?; // delivers every pending event
    let events = groups.0.lock().expect("not poisoned");
    let event = &events[&group_id];
    println!(
        "group event:    group {} = LSNs {}..={} ({} records, {} bytes), synced {}, \
         waited {:?}, write {:?}, fdatasync {:?}, error {:?}",
        event.group_id,
        event.first_lsn,
        event.last_lsn,
        event.records,
        event.bytes,
        event.synced,
        event.queue_wait,
        event.write_time,
        event.sync_time,
        event.error
    );

    // Step 3: is it durable? (It was, when append returned Ok for a Sync record.)
    println!(
        "durable:        durable_lsn {} >= {lsn}: {}",
        wal.durable_lsn(),
        wal.durable_lsn() >= lsn
    );

    // Step 4: the record on disk, found by its id alone.
    let reopened = Wal::open_read_only(dir.path(), WalOptions::default())?;
    let found = reopened
        .read_from(1)
        .find(|r| {
            r.as_ref()
                .map_or(true, |r| r.correlation_id == Some(the_order))
        })
        .expect("the order is in the log")?;
    println!(
        "on disk:        LSN {} carries {} : {}",
        found.lsn,
        the_order,
        String::from_utf8_lossy(&found.payload)
    );
    assert_eq!(found.lsn, lsn);
    println!(
        "same from the shell: groupwal inspect {} --correlation {the_order}",
        dir.path().display()
    );
    Ok(())
}
