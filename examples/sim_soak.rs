//! Soak: many seeded random workloads on the simulated storage, each checked against the
//! model (`groupwal::testing::run_ops`). Prints the seeds per minute it achieves and, for any
//! failing seed, the error and a one-line command that reproduces it.
//!
//! ```sh
//! cargo run --release --features sim --example sim_soak -- --seeds 100000
//! cargo run --release --features sim --example sim_soak -- --start 4711 --seeds 1
//! ```
//!
//! Options: `--seeds N` (default 1000), `--start S` (first seed, default 0), `--ops M`
//! (operations per seed, default 200), `--jobs J` (threads, default: available cores),
//! `--hang-secs H` (a seed running longer is reported as a hang, default 120).

use groupwal::testing::{random_ops, run_ops, Summary};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    seeds: u64,
    start: u64,
    ops: usize,
    jobs: usize,
    hang_secs: u64,
}

const USAGE: &str = "usage: sim_soak [--seeds N (1000)] [--start S (0)] [--ops M (200)] \
[--jobs J (cores)] [--hang-secs H (120)]";

/// The options, or `Ok(None)` when `--help` asked for the usage.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        seeds: 1000,
        start: 0,
        ops: 200,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hang_secs: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seeds" => args.seeds = number(&value)?,
            "--start" => args.start = number(&value)?,
            "--ops" => args.ops = number(&value)? as usize,
            "--jobs" => args.jobs = (number(&value)? as usize).max(1),
            "--hang-secs" => args.hang_secs = number(&value)?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

fn repro(seed: u64, ops: usize) -> String {
    let ops = if ops == 200 {
        String::new()
    } else {
        format!(" --ops {ops}")
    };
    format!(
        "cargo run --release --features sim --example sim_soak -- --start {seed} --seeds 1{ops}"
    )
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    summary: Summary,
    failures: Vec<(u64, String)>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sim_soak: {e}");
            return ExitCode::from(2);
        }
    };
    // Panics inside a run are failures of that seed, reported below; keep the default
    // hook's message off the screen.
    std::panic::set_hook(Box::new(|_| {}));
    let end = args.start.saturating_add(args.seeds);
    let next = Arc::new(AtomicU64::new(args.start));
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Mutex::new(Totals::default()));
    // Per job: the seed it runs and since when (u64::MAX: idle).
    let running: Arc<Vec<(AtomicU64, Mutex<Instant>)>> = Arc::new(
        (0..args.jobs)
            .map(|_| (AtomicU64::new(u64::MAX), Mutex::new(Instant::now())))
            .collect(),
    );
    let started = Instant::now();
    println!(
        "sim_soak: seeds {}..{end}, {} ops each, {} jobs",
        args.start, args.ops, args.jobs
    );
    let workers: Vec<_> = (0..args.jobs)
        .map(|job| {
            let (next, stop, totals, running) =
                (next.clone(), stop.clone(), totals.clone(), running.clone());
            let ops_per_seed = args.ops;
            std::thread::spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                *running[job].1.lock().unwrap() = Instant::now();
                running[job].0.store(seed, Ordering::Relaxed);
                let ops = random_ops(seed, ops_per_seed);
                let result =
                    std::panic::catch_unwind(|| run_ops(seed, &ops)).unwrap_or_else(|panic| {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(format!("seed {seed}: panicked: {msg}"))
                    });
                running[job].0.store(u64::MAX, Ordering::Relaxed);
                let mut t = totals.lock().unwrap();
                t.seeds += 1;
                match result {
                    Ok(s) => {
                        let sum = &mut t.summary;
                        sum.ops += s.ops;
                        sum.acked += s.acked;
                        sum.unknown += s.unknown;
                        sum.refused += s.refused;
                        sum.crashes += s.crashes;
                        sum.recoveries += s.recoveries;
                        sum.faults += s.faults;
                        sum.poisonings += s.poisonings;
                        sum.pool_files_used += s.pool_files_used;
                    }
                    Err(e) => {
                        println!("FAIL {e}\n  reproduce: {}", repro(seed, ops_per_seed));
                        t.failures.push((seed, e));
                        if t.failures.len() >= 10 {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let mut last_report = Instant::now();
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        for (seed, since) in running.iter() {
            let seed = seed.load(Ordering::Relaxed);
            let elapsed = since.lock().unwrap().elapsed();
            if seed != u64::MAX && elapsed > Duration::from_secs(args.hang_secs) {
                println!(
                    "FAIL seed {seed}: still running after {elapsed:?} (a hang)\n  reproduce: {}",
                    repro(seed, args.ops)
                );
                return ExitCode::FAILURE;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let done = totals.lock().unwrap().seeds;
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            println!(
                "  {done} seeds, {:.0} seeds/min",
                done as f64 / minutes.max(1e-9)
            );
        }
    }
    for w in workers {
        let _ = w.join();
    }
    let t = totals.lock().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let s = &t.summary;
    println!(
        "sim_soak: {} seeds in {secs:.1} s: {:.0} seeds/min; {} ops, {} records acknowledged, \
         {} of unknown outcome, {} refused, {} crashes, {} recoveries checked, {} faults fired, \
         {} poisonings, {} pool files used",
        t.seeds,
        t.seeds as f64 * 60.0 / secs.max(1e-9),
        s.ops,
        s.acked,
        s.unknown,
        s.refused,
        s.crashes,
        s.recoveries,
        s.faults,
        s.poisonings,
        s.pool_files_used
    );
    if t.failures.is_empty() {
        println!("0 failed");
        ExitCode::SUCCESS
    } else {
        println!("{} failed:", t.failures.len());
        for (seed, _) in &t.failures {
            println!("  {}", repro(*seed, args.ops));
        }
        ExitCode::FAILURE
    }
}
