//! A pure model of transfer progress: totals, rate and time left.
//!
//! It holds numbers and derives everything else, so the headless bar and
//! the terminal UI show the same figures and both can be tested without a
//! clock (every method that needs the time takes it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks: long enough to be steady, short enough to
/// follow a change of speed.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Progress of a whole transfer (or of one file: same numbers).
#[derive(Debug, Clone)]
pub struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    samples: VecDeque<(Instant, u64)>,
}

impl Progress {
    pub fn new(total: u64, now: Instant) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((now, 0));
        Progress {
            total,
            done: 0,
            started: now,
            samples,
        }
    }

    /// Records that `done` bytes are now through.
    pub fn set_done(&mut self, done: u64, now: Instant) {
        self.done = done.min(self.total.max(done));
        self.samples.push_back((now, self.done));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Fraction done, 0.0 to 1.0. An empty transfer counts as done.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }

    /// Bytes per second over the recent window, if it can be told yet.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let (t0, b0) = *self.samples.front()?;
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        (secs >= 0.05).then(|| (self.done.saturating_sub(b0)) as f64 / secs)
    }

    /// Average bytes per second since the start.
    pub fn average_rate(&self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.started).as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// Time left at the recent rate.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let rate = self.rate(now).filter(|r| *r > 0.0)?;
        let left = self.total.saturating_sub(self.done) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }

    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// Formats a duration as `1h02m`, `3m05s` or `42s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rate_and_eta_follow_the_numbers() {
        let t0 = Instant::now();
        let mut p = Progress::new(1000, t0);
        assert_eq!(p.ratio(), 0.0);
        assert!(p.rate(t0).is_none());
        p.set_done(250, t0 + Duration::from_secs(1));
        assert_eq!(p.ratio(), 0.25);
        let rate = p.rate(t0 + Duration::from_secs(1)).expect("rate");
        assert!((rate - 250.0).abs() < 1e-6);
        assert_eq!(
            p.eta(t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn rate_forgets_old_samples() {
        let t0 = Instant::now();
        let mut p = Progress::new(1 << 30, t0);
        // Fast at first, then stalled: the rate must drop towards zero.
        p.set_done(1 << 20, t0 + Duration::from_secs(1));
        for s in 2..10 {
            p.set_done(1 << 20, t0 + Duration::from_secs(s));
        }
        let rate = p.rate(t0 + Duration::from_secs(10)).expect("rate");
        assert!(rate < 1.0, "{rate}");
    }

    #[test]
    fn empty_transfer_is_complete() {
        let p = Progress::new(0, Instant::now());
        assert_eq!(p.ratio(), 1.0);
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }
}
