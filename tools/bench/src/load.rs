//! The in-process load generator: N closed-loop clients (tokio tasks), each
//! with one request outstanding, for a warm-up and then a fixed measured
//! window. Only operations that start inside the window and complete inside
//! it count; each one's latency goes to an HDR histogram (microseconds).
//! The same loop drives every system, so walship and the baselines are
//! measured by identical code.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
// tokio's clock, so a test can pause it.
use tokio::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies up to a minute, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One measured point.
pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    pub hist: Histogram<u64>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.window.as_secs_f64()
    }
}

/// Runs `clients` closed loops of `op(client, seq)` for `warmup + window`.
/// `op` returns `Err(reason)` for a failed operation (counted, not timed).
pub async fn closed_loop<F, Fut>(clients: usize, warmup: Duration, window: Duration, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut seq = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = op(c, seq).await;
                seq += 1;
                let t1 = Instant::now();
                if t0 < measure_from || t1 > end {
                    continue;
                }
                match r {
                    Ok(()) => {
                        ops += 1;
                        let us = (t1 - t0).as_micros().clamp(1, MAX_LATENCY_US as u128) as u64;
                        hist.record(us).expect("latency within bounds");
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, ops, errors, first_error)
        }));
    }
    let mut out = Outcome {
        ops: 0,
        errors: 0,
        first_error: None,
        window,
        hist: histogram(),
    };
    for t in tasks {
        match t.await {
            Ok((h, ops, errors, first_error)) => {
                out.hist.add(h).expect("same bounds");
                out.ops += ops;
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("client task panicked: {e}"));
            }
        }
    }
    out
}

/// The value every client writes: `size` bytes, printable, tagged with the
/// client so values differ between clients.
pub fn value(size: usize, client: usize) -> Vec<u8> {
    let tag = format!("c{client}:");
    let mut v: Vec<u8> = tag.bytes().chain(std::iter::repeat(b'x')).take(size).collect();
    v.truncate(size);
    v
}

/// Key of write `seq` of `client` in a keyspace of `keyspace` keys shared by
/// all clients (client-interleaved so concurrent writers rarely hit one key).
pub fn key_index(client: usize, seq: u64, clients: usize, keyspace: u64) -> u64 {
    (seq * clients as u64 + client as u64) % keyspace
}

/// Percentiles over plain samples (failover and rebirth times).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    /// Nearest-rank percentiles.
    pub fn of(samples_ms: &[f64]) -> Spread {
        if samples_ms.is_empty() {
            return Spread::default();
        }
        let mut s = samples_ms.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Spread {
            count: s.len(),
            min_ms: s[0],
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: s[s.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Spread::of(&s);
        assert_eq!((p.min_ms, p.p50_ms, p.p99_ms, p.max_ms), (1.0, 50.0, 99.0, 100.0));
        assert_eq!(Spread::of(&[]).count, 0);
    }

    #[test]
    fn values_and_keys() {
        assert_eq!(value(100, 3).len(), 100);
        assert_eq!(value(2, 30).len(), 2);
        assert!(key_index(63, 1_000_000, 64, 1000) < 1000);
    }

    /// On tokio's paused clock (it jumps to the next timer when every task
    /// waits), so the count does not depend on how busy the machine is.
    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_only_the_window() {
        let o = closed_loop(2, Duration::from_millis(50), Duration::from_millis(200), |_, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await;
        // Two clients, one 10 ms op at a time, in a 200 ms window: 20 each.
        assert!((38..=40).contains(&o.ops), "{} ops", o.ops);
        assert_eq!(o.errors, 0);
        assert!(Latency::of(&o.hist).p50_ms >= 10.0);
    }
}
