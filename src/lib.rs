//! groupwal: an embedded write-ahead log with group commit.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
pub mod format;
pub mod io;

pub use error::{Error, Result};
pub use format::CorrelationId;
