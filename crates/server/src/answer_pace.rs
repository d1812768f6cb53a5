//! A client must take the server's answers at the minimum rate, as it must
//! send its bodies at it.
//!
//! The committer writes answers with a write timeout, but that timeout
//! starts again with every byte the client takes. A client reading a few
//! bytes every half minute kept the committer writing, the session thread
//! waiting to hand it more work (where none of the session's own deadlines
//! is checked) and its slot busy, so never evicted, for as long as it
//! liked. So the time a write spends waiting for the client to make room is
//! added up: over each stretch of [`MinRate::window`] of it, the client
//! must have taken [`MinRate::bytes_per_sec`] for every second.

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
    /// took meanwhile.
    waited: Duration,
    taken: u64,
}

impl<W: Write> Paced<W> {
    pub(crate) fn new(inner: W, rule: MinRate) -> Self {
        Paced {
            inner,
            rule,
            waited: Duration::ZERO,
            taken: 0,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn note(&mut self, took: Duration, n: usize) -> io::Result<()> {
        if took < WAITED {
            return Ok(());
        }
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
        self.note(started.elapsed(), n)?;
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
        // 100 bytes every 60 ms: about 1,700 B/s, for over three windows.
        let slow = Slow {
            wait: Duration::from_millis(60),
            per_write: 100,
        };
        let mut paced = Paced::new(slow, rule());
        paced.write_all(&[0; 2000]).expect("fast enough");
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
