//! Options of a [`Consumer`](super::Consumer), each with its default and range.

use crate::error::{Error, Result};
use std::time::Duration;

/// The most records one batch may hold (`poll`'s `max_records`, `batch_records_max`).
pub const BATCH_RECORDS_MAX: usize = 1 << 16;
/// The most payload bytes one batch may hold (a single larger record still forms a batch).
pub const BATCH_BYTES_MAX: usize = 1 << 30;
/// The most deliveries of one record or batch `max_attempts` may allow.
pub const ATTEMPTS_MAX: u32 = 1000;
/// The longest retry delay `backoff_cap` may allow.
pub const BACKOFF_CAP_MAX: Duration = Duration::from_secs(3600);

/// Where a consumer that has no cursor yet starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// At the oldest record still in the log: the consumer sees everything.
    #[default]
    Oldest,
    /// After the last durable record when the consumer is first opened: it sees only what
    /// becomes durable later (including records appended but not yet synced then).
    Latest,
}

/// Options for [`Wal::consumer`](crate::Wal::consumer). Build with
/// [`ConsumerOptions::default`] and the setters; every value is checked when the consumer
/// opens.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) start: Start,
    pub(crate) batch_records_max: usize,
    pub(crate) batch_bytes_max: usize,
    pub(crate) poll_wait: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            seed: None,
            start: Start::Oldest,
            batch_records_max: 1000,
            batch_bytes_max: 16 << 20,
            poll_wait: Duration::from_millis(100),
        }
    }
}

impl ConsumerOptions {
    /// How many times a record is handed to the handler before it is dead-lettered: a
    /// record answered with [`Outcome::Retry`](super::Outcome::Retry) this many times, or a
    /// batch delivered this many times without being committed (the process died or the
    /// batch was dropped), which starts the bisection. Default: 5. Range: 1 to 1000.
    pub fn max_attempts(mut self, v: u32) -> Self {
        self.max_attempts = v;
        self
    }

    /// Ceiling of the first retry's delay; each further retry doubles it, up to
    /// `backoff_cap`. The delay itself is drawn uniformly below the ceiling ("full
    /// jitter"). Default: 100 ms. Range: 0 to `backoff_cap`.
    pub fn backoff_base(mut self, v: Duration) -> Self {
        self.backoff_base = v;
        self
    }

    /// Largest ceiling of a retry's delay. Default: 30 s. Range: `backoff_base` to 1 hour.
    pub fn backoff_cap(mut self, v: Duration) -> Self {
        self.backoff_cap = v;
        self
    }

    /// Seed of the jitter's random numbers, for reproducible tests. Default: random, so
    /// that consumers started together do not retry in lockstep.
    pub fn seed(mut self, v: Option<u64>) -> Self {
        self.seed = v;
        self
    }

    /// Where a consumer without a cursor starts. Default: [`Start::Oldest`]. Ignored once
    /// the consumer has a cursor.
    pub fn start(mut self, v: Start) -> Self {
        self.start = v;
        self
    }

    /// Records per batch of [`Consumer::run`](super::Consumer::run) and
    /// [`Consumer::drain`](super::Consumer::drain). Default: 1000. Range: 1 to 65,536.
    pub fn batch_records_max(mut self, v: usize) -> Self {
        self.batch_records_max = v;
        self
    }

    /// Payload bytes per batch, for every poll: a batch stops growing before it passes
    /// this, but always holds at least one record. Default: 16 MiB. Range: 1 byte to 1 GiB.
    pub fn batch_bytes_max(mut self, v: usize) -> Self {
        self.batch_bytes_max = v;
        self
    }

    /// How long each poll of [`Consumer::run`](super::Consumer::run) and
    /// [`Consumer::drain`](super::Consumer::drain) waits for records, and so how soon `run`
    /// sees its stop flag. Default: 100 ms. Range: 0 to 60 s.
    pub fn poll_wait(mut self, v: Duration) -> Self {
        self.poll_wait = v;
        self
    }

    /// Checks every value; the first that is out of range is named in the error.
    pub(crate) fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, reason: String) -> Result<()> {
            Err(Error::InvalidOptions { name, reason })
        }
        if !(1..=ATTEMPTS_MAX).contains(&self.max_attempts) {
            return bad(
                "max_attempts",
                format!("{} is outside 1..={ATTEMPTS_MAX}", self.max_attempts),
            );
        }
        if self.backoff_cap > BACKOFF_CAP_MAX {
            return bad(
                "backoff_cap",
                format!("{:?} is above {BACKOFF_CAP_MAX:?}", self.backoff_cap),
            );
        }
        if self.backoff_base > self.backoff_cap {
            return bad(
                "backoff_base",
                format!(
                    "{:?} is above backoff_cap ({:?})",
                    self.backoff_base, self.backoff_cap
                ),
            );
        }
        check_batch_records("batch_records_max", self.batch_records_max)?;
        if !(1..=BATCH_BYTES_MAX).contains(&self.batch_bytes_max) {
            return bad(
                "batch_bytes_max",
                format!("{} is outside 1..={BATCH_BYTES_MAX}", self.batch_bytes_max),
            );
        }
        if self.poll_wait > Duration::from_secs(60) {
            return bad("poll_wait", format!("{:?} is above 60s", self.poll_wait));
        }
        Ok(())
    }
}

/// Checks a batch's record count (an option, or `poll`'s argument).
pub(crate) fn check_batch_records(name: &'static str, v: usize) -> Result<()> {
    if (1..=BATCH_RECORDS_MAX).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidOptions {
            name,
            reason: format!("{v} is outside 1..={BATCH_RECORDS_MAX}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_is_checked() {
        ConsumerOptions::default().validate().unwrap();
        let name = |o: ConsumerOptions| match o.validate() {
            Err(Error::InvalidOptions { name, .. }) => name,
            other => panic!("expected InvalidOptions, got {other:?}"),
        };
        let d = ConsumerOptions::default;
        assert_eq!(name(d().max_attempts(0)), "max_attempts");
        assert_eq!(name(d().max_attempts(1001)), "max_attempts");
        assert_eq!(
            name(d().backoff_cap(Duration::from_secs(3601))),
            "backoff_cap"
        );
        assert_eq!(
            name(d().backoff_base(Duration::from_secs(31))),
            "backoff_base"
        );
        assert_eq!(name(d().batch_records_max(0)), "batch_records_max");
        assert_eq!(
            name(d().batch_records_max(BATCH_RECORDS_MAX + 1)),
            "batch_records_max"
        );
        assert_eq!(name(d().batch_bytes_max(0)), "batch_bytes_max");
        assert_eq!(name(d().poll_wait(Duration::from_secs(61))), "poll_wait");
        d().backoff_base(Duration::ZERO)
            .backoff_cap(Duration::ZERO)
            .validate()
            .unwrap();
    }
}
