//! Rate limiting for `--limit-rate`, and parsing rates the way curl does.

use std::time::{Duration, Instant};

/// Parses a rate such as `500K`, `20M`, `1G` or `1048576` into bytes per
/// second. Suffixes are binary (K = 1024), as in curl; a trailing `B` or
/// `/s` is accepted.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => t.split_at(at),
        None => (t, ""),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (try 500K or 20M)"))?;
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KI" => 1 << 10,
        "M" | "MI" => 1 << 20,
        "G" | "GI" => 1 << 30,
        _ => return Err(format!("unknown unit in rate `{text}` (use K, M or G)")),
    };
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!(
            "rate `{text}` must be at least one byte per second"
        ));
    }
    Ok(bytes as u64)
}

/// Keeps a sender at or under a byte rate by sleeping when it runs ahead.
#[derive(Debug)]
pub struct Pacer {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: Option<u64>) -> Self {
        Pacer {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// How many bytes to move at a time: small enough that a slow rate
    /// still looks smooth (about ten steps a second).
    pub fn chunk_len(&self, max: usize) -> usize {
        match self.rate {
            Some(r) => (r / 10).clamp(1024, max as u64) as usize,
            None => max,
        }
    }

    /// Records `n` bytes sent and sleeps as long as needed to stay on rate.
    pub fn account(&mut self, n: usize) {
        self.sent += n as u64;
        if let Some(wait) = self.ahead_by(Instant::now()) {
            std::thread::sleep(wait);
        }
    }

    /// Starts counting afresh, after the sender had nothing to send for a
    /// while: time spent idle is not credit to send faster afterwards.
    pub fn rebase(&mut self) {
        self.start = Instant::now();
        self.sent = 0;
    }

    /// How far ahead of the allowed rate the sender is at `now`.
    fn ahead_by(&self, now: Instant) -> Option<Duration> {
        let rate = self.rate?;
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        let elapsed = now.saturating_duration_since(self.start);
        due.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_style_rates() {
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("20M"), Ok(20 << 20));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("1.5M"), Ok(3 << 19));
        assert_eq!(parse_rate("2048"), Ok(2048));
        assert_eq!(parse_rate("20MB/s"), Ok(20 << 20));
        assert_eq!(parse_rate("64k"), Ok(64 << 10));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10X").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5K").is_err());
    }

    #[test]
    fn pacer_knows_when_it_is_ahead() {
        let mut p = Pacer::new(Some(1000));
        p.sent = 500;
        let wait = p.ahead_by(p.start).expect("ahead");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(p.ahead_by(p.start + Duration::from_secs(1)).is_none());
        let unlimited = Pacer::new(None);
        assert!(unlimited.ahead_by(unlimited.start).is_none());
        assert_eq!(unlimited.chunk_len(1 << 20), 1 << 20);
        assert_eq!(Pacer::new(Some(100_000)).chunk_len(1 << 20), 10_000);
    }
}
