//! The `tracing` feature: a span per group commit, an event per group, sampled per-record
//! events, an error event for a failed group — and nothing per record unless sampled.

use groupwal::io::sim::{FaultKind, SimStorage};
use groupwal::{Record, Wal, WalOptions};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};

/// Counts spans by name and events by level and message field.
#[derive(Default)]
struct Counting {
    next_id: AtomicU64,
    spans: Mutex<Vec<String>>,
    events: Mutex<Vec<(Level, String)>>,
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Counting {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.spans.lock().push(span.metadata().name().to_string());
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.events.lock().push((*event.metadata().level(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn group_spans_group_events_sampled_records_and_errors() {
    let counting = Arc::new(Counting::default());
    let dispatch = tracing::Dispatch::from(counting.clone());
    // The leader runs on the appending thread here (one writer, no background syncs due).
    tracing::dispatcher::with_default(&dispatch, || {
        let sim = SimStorage::new(1);
        let opts = WalOptions::default()
            .storage(sim.clone())
            .segment_bytes(1 << 20)
            .trace_sample_rate(1.0);
        let wal = Wal::open("log", opts).unwrap();
        for i in 0..10u64 {
            wal.append(Record::new(b"x").correlation_id(i)).unwrap();
        }
        sim.fail_nth(FaultKind::SyncData, 1);
        assert!(wal.append(Record::new(b"y").correlation_id(99u64)).is_err());
        let _ = wal.close();
    });
    let spans = counting.spans.lock().clone();
    let events = counting.events.lock().clone();
    let groups = spans.iter().filter(|s| *s == "group_commit").count();
    assert_eq!(groups, 11, "one span per group: {spans:?}");
    let committed = events
        .iter()
        .filter(|(_, m)| m == "group committed")
        .count();
    assert_eq!(committed, 10);
    let records = events
        .iter()
        .filter(|(l, m)| *l == Level::TRACE && m == "record")
        .count();
    assert_eq!(
        records, 11,
        "rate 1.0: every id, including the failed group's"
    );
    assert!(events
        .iter()
        .any(|(l, m)| *l == Level::ERROR && m == "group failed"));
}

#[test]
fn nothing_per_record_unless_sampled() {
    let counting = Arc::new(Counting::default());
    let dispatch = tracing::Dispatch::from(counting.clone());
    tracing::dispatcher::with_default(&dispatch, || {
        let opts = WalOptions::default()
            .storage(SimStorage::new(2))
            .segment_bytes(1 << 20)
            .trace_sample_rate(0.0);
        let wal = Wal::open("log", opts).unwrap();
        for i in 0..50u64 {
            wal.append(Record::new(b"x").correlation_id(i)).unwrap();
        }
        wal.close().unwrap();
    });
    let events = counting.events.lock().clone();
    assert!(events.iter().all(|(l, _)| *l != Level::TRACE), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|(_, m)| m == "group committed")
            .count(),
        50
    );
}
