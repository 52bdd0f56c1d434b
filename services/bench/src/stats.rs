//! Latency samples and their summary (nearest-rank percentiles over every sample: the counts here
//! are small enough to keep them all, so nothing is approximated).
use std::time::Duration;

use serde::Serialize;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    us: Vec<u64>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples {
            us: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.us
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.us.extend(other.us);
    }

    pub fn len(&self) -> usize {
        self.us.len()
    }

    pub fn summary(&self) -> Latency {
        let mut v = self.us.clone();
        v.sort_unstable();
        let pick = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            let rank = (p * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
        };
        let mean = if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
        };
        Latency {
            count: v.len() as u64,
            mean_ms: round3(mean),
            p50_ms: round3(pick(0.50)),
            p95_ms: round3(pick(0.95)),
            p99_ms: round3(pick(0.99)),
            max_ms: round3(v.last().map(|&x| x as f64 / 1000.0).unwrap_or(0.0)),
        }
    }
}

/// Summary of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `items / seconds`, 0 when no time passed.
pub fn rate(items: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        round1(items as f64 / s)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100u64 {
            s.push(Duration::from_millis(ms));
        }
        let l = s.summary();
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p95_ms, 95.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(Samples::default().summary().count, 0);
    }
}
