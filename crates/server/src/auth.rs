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
    failures: Mutex<HashMap<IpAddr, Failures>>,
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

    /// Checks the token a client gave.
    ///
    /// A wrong one is answered only after a delay that grows with the
    /// address's recent failures, and until that delay is over no other
    /// token from the address is compared at all: it is refused as
    /// [`Check::TooSoon`]. Without that, a guesser opening many connections
    /// at once would wait out its delays side by side and try a token on
    /// each of them. A missing token is answered at once: it guesses
    /// nothing, and a client that simply forgot its token should hear so,
    /// not time out.
    pub fn check(&self, from: IpAddr, given: Option<&str>) -> Check {
        let Some(want) = &self.token else {
            return Check::Pass;
        };
        let Some(given) = given else {
            return Check::Missing;
        };
        // Compared under the lock, so two tokens from one address can never
        // both be compared before the first one's failure is recorded.
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(seen) = failures.get(&from)
            && now < seen.next_try
        {
            return Check::TooSoon;
        }
        if blake3::hash(given.as_bytes()) == *want {
            // An honest typo is forgiven once the right token comes.
            failures.remove(&from);
            return Check::Pass;
        }
        let answer_at = note_failure(&mut failures, from, now);
        drop(failures);
        std::thread::sleep(answer_at.saturating_duration_since(Instant::now()));
        Check::Wrong
    }
}

/// What [`Auth::check`] made of a client's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The right token, or none is required.
    Pass,
    /// None was given, and one is required.
    Missing,
    /// The token is wrong (answered after the address's delay).
    Wrong,
    /// The address got the token wrong lately and its delay is not over:
    /// the token was not compared.
    TooSoon,
}

/// Records a failure from `from` at `now`, and returns when the next token
/// from that address may be compared (and this one answered).
fn note_failure(failures: &mut HashMap<IpAddr, Failures>, from: IpAddr, now: Instant) -> Instant {
    if failures.len() >= MAX_ADDRESSES {
        failures.retain(|_, seen| now.duration_since(seen.last) < MEMORY);
        if failures.len() >= MAX_ADDRESSES {
            failures.clear();
        }
    }
    let seen = failures.entry(from).or_insert(Failures {
        count: 0,
        last: now,
        next_try: now,
    });
    if now.duration_since(seen.last) >= MEMORY {
        seen.count = 0;
    }
    seen.count = seen.count.saturating_add(1);
    seen.last = now;
    seen.next_try = now + delay_after(seen.count);
    seen.next_try
}

/// An address's recent wrong tokens.
#[derive(Debug)]
struct Failures {
    count: u32,
    /// When the last one came; older than [`MEMORY`], they are forgotten.
    last: Instant,
    /// No token from the address is compared before this.
    next_try: Instant,
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
        assert_eq!(auth.check(IpAddr::from([127, 0, 0, 1]), None), Check::Pass);
    }

    #[test]
    fn the_right_token_passes_at_once_a_wrong_one_waits() {
        let auth = Auth::new(Some("open sesame"), false);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(auth.required());
        assert!(!auth.legacy_allowed());
        assert_eq!(auth.check(ip, Some("open sesame")), Check::Pass);
        let started = Instant::now();
        assert_eq!(auth.check(ip, Some("open sesame!")), Check::Wrong);
        assert!(started.elapsed() >= FIRST_DELAY);
        assert_eq!(auth.check(ip, None), Check::Missing);
        assert!(Auth::new(Some("t"), true).legacy_allowed());
    }

    /// Guesses made side by side must not each get compared: while one
    /// waits out its delay, the others from that address are turned away.
    #[test]
    fn tokens_from_an_address_in_its_delay_are_not_compared() {
        let auth = Auth::new(Some("open sesame"), false);
        let ip = IpAddr::from([192, 0, 2, 7]);
        let other = IpAddr::from([192, 0, 2, 8]);
        let answers: Vec<Check> = std::thread::scope(|s| {
            let guesses: Vec<_> = (0..8)
                .map(|i| {
                    let auth = &auth;
                    s.spawn(move || auth.check(ip, Some(&format!("guess {i}"))))
                })
                .collect();
            guesses
                .into_iter()
                .map(|g| g.join().expect("guess thread"))
                .collect()
        });
        // Eight threads start within far less than the 250 ms (and then
        // 500 ms) a compared guess makes the others wait.
        let compared = answers.iter().filter(|&&a| a == Check::Wrong).count();
        assert!((1..=2).contains(&compared), "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|&a| matches!(a, Check::Wrong | Check::TooSoon))
        );
        // Even the right token waits for the delay to end, then passes;
        // another address was never held up.
        assert_eq!(auth.check(other, Some("open sesame")), Check::Pass);
        let until = auth.failures.lock().expect("lock")[&ip].next_try;
        if Instant::now() < until {
            assert_eq!(auth.check(ip, Some("open sesame")), Check::TooSoon);
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        assert_eq!(auth.check(ip, Some("open sesame")), Check::Pass);
        assert!(auth.failures.lock().expect("lock").is_empty());
    }

    #[test]
    fn the_delay_doubles_and_is_capped() {
        assert_eq!(delay_after(1), FIRST_DELAY);
        assert_eq!(delay_after(2), FIRST_DELAY * 2);
        assert_eq!(delay_after(3), FIRST_DELAY * 4);
        assert_eq!(delay_after(50), MAX_DELAY);
    }
}
