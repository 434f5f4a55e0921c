//! Raw RSA-2048 key generation rate: `openssl::rsa::Rsa::generate(2048)` (the
//! call behind server-generated RSA keys, `keys::generate`) on a number of
//! threads, for a fixed number of keys, nothing else. The reference for
//! server-side RSA registration in `scripts/bench-register.sh`
//! (`docs/benchmarks.md`).
//!
//! `rsa-keygen-rate [keys] [threads]` (200 keys on 2 threads by default). The
//! time of one key varies a lot (the search for primes is random), so use
//! enough keys for a stable mean. Prints one `RESULT` line: the rate, and the
//! mean and standard deviation of one key's time (wall clock, in its thread) with
//! the standard error of that mean in percent, which says how far two runs'
//! rates may differ by chance alone.

#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use openssl::rsa::Rsa;

fn arg(args: &[String], i: usize, default: usize, name: &str) -> Result<usize, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive whole number, not {s:?}")),
        },
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 3 {
        return Err("usage: rsa-keygen-rate [keys] [threads]".into());
    }
    let keys = arg(&args, 1, 200, "keys")?;
    let threads = arg(&args, 2, 2, "threads")?;
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let made: Result<Vec<Vec<f64>>, String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>, String> {
                    let mut times = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < keys {
                        let one = Instant::now();
                        Rsa::generate(2048).map_err(|e| format!("RSA key generation: {e}"))?;
                        times.push(one.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(times)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| "a key generation thread panicked".to_string())?
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let times: Vec<f64> = made?.into_iter().flatten().collect();
    let n = times.len() as f64;
    let mean = times.iter().sum::<f64>() / n;
    let sd = (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    println!(
        "RESULT raw rsa-2048 keygen threads={threads} keys={} seconds={seconds:.2} \
         key_ms_mean={mean:.1} key_ms_sd={sd:.1} sem_pct={:.1} keys_per_s={:.2}",
        times.len(),
        100.0 * sd / mean / n.sqrt(),
        n / seconds
    );
    Ok(())
}
