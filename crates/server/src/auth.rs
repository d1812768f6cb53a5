//! Who may upload: the shared token a server can be started with, checked
//! in constant time, and a growing delay for an address that keeps getting
//! it wrong (so guessing costs time, while an honest typo costs little).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The delay after the first wrong token from an address; it doubles with
/// each further one, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(600);
/// Addresses remembered at most (the table is cleared when full, which only
/// ever makes the delay shorter, never blocks anyone).
const MAX_ADDRESSES: usize = 10_000;

/// The server's access rule.
#[derive(Debug, Default)]
pub struct Auth {
    /// BLAKE3 of the token, if one is required. Comparing hashes compares
    /// fixed-size values in constant time (blake3's `Hash` equality is), so
    /// neither the token's length nor its content leaks through timing.
    token: Option<blake3::Hash>,
    /// Take tutorial-style uploads (which cannot carry a token) anyway.
    pub allow_legacy: bool,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Auth {
    pub fn new(token: Option<&str>, allow_legacy: bool) -> Self {
        Auth {
            token: token.map(|t| blake3::hash(t.as_bytes())),
            allow_legacy,
            failures: Mutex::default(),
        }
    }

    /// Whether clients must give a token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a tutorial-style client may upload.
    pub fn legacy_allowed(&self) -> bool {
        self.token.is_none() || self.allow_legacy
    }

    /// Checks the token a client gave. A wrong one is answered only after
    /// a delay that grows with the address's recent failures. A missing
    /// one is answered at once: it guesses nothing, and a client that
    /// simply forgot its token should hear so, not time out.
    pub fn check(&self, from: IpAddr, given: Option<&str>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let Some(given) = given else {
            return false;
        };
        if blake3::hash(given.as_bytes()) == *want {
            return true;
        }
        std::thread::sleep(self.note_failure(from));
        false
    }

    /// Records a failure and returns how long to make this one wait.
    fn note_failure(&self, from: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, last)| now.duration_since(*last) < MEMORY);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(from).or_insert((0, now));
        if now.duration_since(entry.1) >= MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay_after(entry.0)
    }
}

/// The wait after the `n`th recent failure (n ≥ 1).
fn delay_after(n: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_lets_everyone_in() {
        let auth = Auth::new(None, false);
        assert!(!auth.required());
        assert!(auth.legacy_allowed());
        assert!(auth.check(IpAddr::from([127, 0, 0, 1]), None));
    }

    #[test]
    fn the_right_token_passes_at_once_a_wrong_one_waits() {
        let auth = Auth::new(Some("open sesame"), false);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(auth.required());
        assert!(!auth.legacy_allowed());
        assert!(auth.check(ip, Some("open sesame")));
        let started = Instant::now();
        assert!(!auth.check(ip, Some("open sesame!")));
        assert!(started.elapsed() >= FIRST_DELAY);
        assert!(!auth.check(ip, None));
        assert!(Auth::new(Some("t"), true).legacy_allowed());
    }

    #[test]
    fn the_delay_doubles_and_is_capped() {
        assert_eq!(delay_after(1), FIRST_DELAY);
        assert_eq!(delay_after(2), FIRST_DELAY * 2);
        assert_eq!(delay_after(3), FIRST_DELAY * 4);
        assert_eq!(delay_after(50), MAX_DELAY);
    }
}
