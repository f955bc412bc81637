//! The two operating-system facts the benchmark needs that std does not give: process CPU
//! time, and the file system a directory lives on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by the SIGINT/SIGTERM handler of [`catch_interrupts`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns SIGINT (Ctrl-C) and SIGTERM into a flag that [`interrupted`] reads, so a long run
/// can stop between steps and clean up after itself instead of dying mid-way.
pub fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        #[allow(unsafe_code)]
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and the
        // function pointer has the `extern "C" fn(c_int)` type `signal` expects.
        unsafe {
            libc::signal(signal, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// CPU time (user + system) used so far by every thread of this process.
pub fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: `getrusage` writes a `struct rusage` through the pointer, which points at a
    // properly sized and aligned, zero-initialised `rusage` owned by this frame; RUSAGE_SELF
    // is always a valid `who`. Zeroed bytes are a valid `rusage` (plain integers), so reading
    // it is sound whether or not the call succeeded.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Restores the default action of `SIGPIPE` (terminate quietly), which the Rust runtime
/// ignores: `groupwal inspect DIR | head` then ends like any Unix filter when `head` exits,
/// instead of panicking on a failed `println!`.
pub fn restore_default_sigpipe() {
    #[allow(unsafe_code)]
    // SAFETY: `signal` with SIG_DFL installs no handler code; it is called once, at the start
    // of `main`, before any other thread exists, so it races with nothing.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The file system type of the mount that holds `dir` (from `/proc/mounts`), if known.
pub fn filesystem_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // /proc/mounts escapes spaces and a few other bytes as octal (`\040`).
        let mount_point = unescape_octal(mount_point);
        if dir.starts_with(&mount_point) {
            let depth = Path::new(&mount_point).components().count();
            if best.as_ref().map_or(true, |(d, _)| depth >= *d) {
                best = Some((depth, fs_type.to_string()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why measurements on this file system would not describe a disk, if they would not.
pub fn non_persistent_reason(fs_type: &str) -> Option<&'static str> {
    match fs_type {
        "tmpfs" | "ramfs" | "devtmpfs" => Some("it lives in memory: fdatasync does nothing there"),
        "overlay" | "aufs" => Some(
            "it is a union file system (a container layer): syncs go to a lower layer you may \
             not mean to measure",
        ),
        "fuse" | "9p" | "virtiofs" | "nfs" | "nfs4" | "cifs" | "smb3" => {
            Some("it is a network or userspace file system: syncs may not reach a local disk")
        }
        _ => None,
    }
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_of_proc_mounts_are_undone() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("/end\\"), "/end\\");
    }

    #[test]
    fn cpu_time_advances() {
        let a = process_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() >= a);
    }
}
