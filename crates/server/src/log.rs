//! Log output on stderr, written a group at a time where that is cheap.
//!
//! The server logs one line per stored file. When thousands of small files
//! arrive, a `write` per line costs the committer as much as linking the
//! file does. A thread may therefore hold its lines for a moment
//! ([`hold_lines`]) and write them with one call when the guard goes; every
//! other line goes out at once.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

thread_local! {
    /// Lines held by this thread, if it is holding.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Lines beyond this many bytes are written even while held, so holding
/// never costs much memory.
const HOLD_AT_MOST: usize = 64 * 1024;

/// The writer the server's log subscriber is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line
    }
}

/// Where one formatted log line goes.
#[derive(Debug)]
pub struct Line;

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let held = HELD.with_borrow_mut(|held| match held {
            Some(lines) => {
                lines.extend_from_slice(bytes);
                if lines.len() >= HOLD_AT_MOST {
                    write_out(lines);
                }
                true
            }
            None => false,
        });
        if !held {
            // A line that cannot be written (stderr on a full disk, or
            // closed) has nowhere else to go. Reporting the failure would
            // be another write to the same place, which panics when it
            // fails: the thread logging, whichever it is, would die.
            let _ = io::stderr().write_all(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Holds this thread's log lines until the guard is dropped, then writes
/// them in one go. Nested holds write when the outermost one ends.
pub fn hold_lines() -> Held {
    let outermost = HELD.with_borrow_mut(|held| {
        if held.is_some() {
            false
        } else {
            *held = Some(Vec::new());
            true
        }
    });
    Held { outermost }
}

/// See [`hold_lines`].
#[derive(Debug)]
#[must_use = "lines are held only while the guard lives"]
pub struct Held {
    outermost: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.outermost {
            // Also on unwinding: held lines are never lost.
            if let Some(mut lines) = HELD.with_borrow_mut(Option::take) {
                write_out(&mut lines);
            }
        }
    }
}

fn write_out(lines: &mut Vec<u8>) {
    // A log line that cannot be written has nowhere else to go.
    let _ = io::stderr().write_all(lines);
    lines.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_bytes() -> Option<usize> {
        HELD.with_borrow(|held| held.as_ref().map(Vec::len))
    }

    #[test]
    fn lines_are_held_until_the_outermost_guard_goes() {
        assert_eq!(held_bytes(), None);
        {
            let _outer = hold_lines();
            Line.write_all(b"one\n").expect("write");
            {
                let _inner = hold_lines();
                Line.write_all(b"two\n").expect("write");
            }
            assert_eq!(held_bytes(), Some(8), "the inner guard wrote nothing");
            // Keep the test's output clean: drop what would be written.
            HELD.with_borrow_mut(|held| held.as_mut().map(Vec::clear));
        }
        assert_eq!(held_bytes(), None, "the outer guard let go");
    }
}
