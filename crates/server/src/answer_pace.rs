//! A client must take the server's answers at the minimum rate, as it must
//! send its bodies at it.
//!
//! The committer writes answers with a write timeout, but that timeout
//! starts again with every byte the client takes. A client reading a few
//! bytes every half minute kept the committer writing, the session thread
//! waiting to hand it more work (where none of the session's own deadlines
//! is checked) and its slot busy, so never evicted, for as long as it
//! liked. So the time a write spends waiting for the client to make room is
//! added up: over each stretch of [`MinRate::window`] of it (waits in close
//! succession), the client must have taken [`MinRate::bytes_per_sec`] for
//! every second.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::body::MinRate;

/// A write that takes this long waited for room in the socket buffer; a
/// write that finds room returns in microseconds.
const WAITED: Duration = Duration::from_millis(50);

/// A writer whose reader must keep up with [`MinRate`].
pub(crate) struct Paced<W> {
    inner: W,
    rule: MinRate,
    /// Time spent waiting for room in this stretch, and what the client
    /// took meanwhile (in writes that waited or not).
    waited: Duration,
    taken: u64,
    /// When the last write that waited ended. A wait long after it starts
    /// a new stretch: only waits in close succession are a client that
    /// does not keep up; the odd slow write of an honest one, hours apart,
    /// must not add up to one.
    last_wait: Option<Instant>,
}

impl<W: Write> Paced<W> {
    pub(crate) fn new(inner: W, rule: MinRate) -> Self {
        Paced {
            inner,
            rule,
            waited: Duration::ZERO,
            taken: 0,
            last_wait: None,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn note(&mut self, started: Instant, n: usize) -> io::Result<()> {
        let ended = Instant::now();
        let took = ended.duration_since(started);
        if took < WAITED {
            if self.last_wait.is_some() {
                self.taken += n as u64;
            }
            return Ok(());
        }
        if self
            .last_wait
            .is_some_and(|last| started.duration_since(last) > self.rule.window)
        {
            self.waited = Duration::ZERO;
            self.taken = 0;
        }
        self.last_wait = Some(ended);
        self.waited += took;
        self.taken += n as u64;
        if self.waited < self.rule.window {
            return Ok(());
        }
        let due = (self.rule.bytes_per_sec as f64 * self.waited.as_secs_f64()) as u64;
        if self.taken < due {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client takes its answers slower than the minimum rate",
            ));
        }
        self.waited = Duration::ZERO;
        self.taken = 0;
        Ok(())
    }
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        let n = self.inner.write(buf)?;
        self.note(started, n)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `per_write` bytes a write, each after waiting `wait`.
    struct Slow {
        wait: Duration,
        per_write: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.wait);
            Ok(buf.len().min(self.per_write))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn rule() -> MinRate {
        MinRate {
            bytes_per_sec: 1000,
            window: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_reader_below_the_rate_is_given_up_on_after_a_window_of_waiting() {
        // 10 bytes every 60 ms: about 170 B/s.
        let slow = Slow {
            wait: Duration::from_millis(60),
            per_write: 10,
        };
        let mut paced = Paced::new(slow, rule());
        let err = paced.write_all(&[0; 4096]).expect_err("too slow");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_reader_at_the_rate_is_kept_however_long_it_waits() {
        // 300 bytes every 60 ms: about 5,000 B/s (against 1,000), for over
        // three windows; well clear of the rule on a loaded machine.
        let slow = Slow {
            wait: Duration::from_millis(60),
            per_write: 300,
        };
        let mut paced = Paced::new(slow, rule());
        paced.write_all(&[0; 6000]).expect("fast enough");
    }

    #[test]
    fn slow_writes_far_apart_do_not_add_up() {
        let mut paced = Paced::new(
            Slow {
                wait: Duration::from_millis(200),
                per_write: 1,
            },
            rule(),
        );
        // Each a 200 ms wait for 1 byte, far under the rate, but each one
        // more than a window after the last: never one stretch of 300 ms.
        for _ in 0..3 {
            paced.write_all(&[0]).expect("an odd slow write");
            std::thread::sleep(Duration::from_millis(350));
        }
    }

    #[test]
    fn writes_that_find_room_do_not_count() {
        let quick = Slow {
            wait: Duration::ZERO,
            per_write: 1,
        };
        let mut paced = Paced::new(quick, rule());
        paced.write_all(&[0; 100_000]).expect("never waited");
    }
}
