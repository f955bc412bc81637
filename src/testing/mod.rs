//! Model-based testing on the simulated storage (feature `sim`). Not a stable API: hidden
//! from the docs, present only so that the property tests (`tests/sim_model.rs`), the soak
//! (`examples/sim_soak.rs`) and the fuzz targets (`fuzz/`) share one operation language and
//! one checker instead of three that drift apart.
//!
//! - [`Op`] is one step of a workload: appends in every durability mode, batches, `submit`,
//!   `sync`, reads, `truncate_before`, crashes (power loss clean or torn, process kill),
//!   injected faults, a space budget and clean reopens.
//! - [`run_ops`] runs a sequence of them on a [`SimStorage`](crate::io::sim::SimStorage)
//!   backed [`Wal`](crate::Wal) and checks it against a model after every step and after
//!   every recovery; it returns a description of the first violation.
//! - [`random_ops`], [`ops_from_bytes`] and [`ops_to_bytes`] make sequences from a seed or
//!   from fuzzer bytes.
//! - [`fuzz`] holds the bodies of the fuzz targets and their seed corpora, so that
//!   `cargo test` runs them too.
//!
//! `docs/TESTING.md` says what each property means and how to reproduce a failure.

pub mod fuzz;
mod gen;
mod model;

pub use gen::{ops_from_bytes, ops_to_bytes, random_ops, FAULT_KINDS};
pub use model::{payload, run_ops, CrashKind, Op, RunConfig, Summary, LOG_DIR};
