//! Waiting on a 32-bit word: Linux futexes.
//!
//! The group-commit path parks each writer on its group's completion word and wakes all of a
//! group's writers with one system call, without a mutex for them to fight over on wake-up.
//! std's `Condvar` would make every woken writer re-take a lock; `thread::park` would need
//! one wake call per writer from the thread that finished the group.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout` when one is given. Returns on a
/// wake-up, on a timeout, on a signal, or at once if the value differs: callers re-check
/// their condition in a loop.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    #[allow(unsafe_code)]
    // SAFETY: FUTEX_WAIT reads the aligned 32-bit word behind a live `&AtomicU32` and the
    // optional timespec, which lives on this stack frame for the duration of the call. A
    // spurious return is harmless: every caller loops on its own condition.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        );
    }
}

fn futex_wake(word: &AtomicU32, count: i32) {
    #[allow(unsafe_code)]
    // SAFETY: FUTEX_WAKE only uses the word's address as a key; it reads and writes no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        );
    }
}

/// Wakes every thread sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    futex_wake(word, i32::MAX);
}

/// Wakes at most one thread sleeping on `word`.
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    futex_wake(word, 1);
}
