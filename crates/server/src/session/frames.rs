//! Waiting for the client's next frame, with the idle and header timeouts
//! that keep silent and trickling peers from holding a thread.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_proto::path::escape_for_display;
use ferry_proto::{FrameError, read_frame};
use rustix::event::{PollFd, PollFlags, Timespec};
use tracing::debug;

use super::{Session, SessionError};
use crate::body;
use crate::commit::Job;
use crate::transport::Incoming;

/// How often a session waiting for its client looks again whether one of
/// its resumed files is still being checked.
const CHECK_POLL: Duration = Duration::from_secs(1);
/// How often a session waiting for its client looks whether the committer
/// failed a file, which ends the session: the client may be waiting for
/// acks, and should not wait out the idle timeout too.
const FAILURE_POLL: Duration = Duration::from_millis(50);

impl<'a> Session<'a> {
    /// Waits for the next frame. `Ok(None)` is a clean close between frames,
    /// or a shutdown in progress.
    pub(super) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(SessionError::CommitFailed);
        }
        let stopping = self.shared.shutting_down.load(Ordering::SeqCst);
        if self.reader.buffer().is_empty() || stopping {
            // About to block (or stop): have what is waiting committed and
            // the acks sent.
            self.queue(Job::Flush)?;
        }
        // A shutdown closes a connection between files, but not one whose
        // next file has already begun to arrive: that upload is running,
        // and gets the grace period like any other. (A tutorial client,
        // which reads no reply, would otherwise lose it without a word.)
        if stopping && !self.bytes_waiting() {
            self.slot.set_idle();
            return Ok(None);
        }
        // While a resumed file of this connection is being checked, the
        // client waits for its ack: that silence is ours, not the client's,
        // so the connection is neither idle (to be evicted) nor timed out.
        // It is looked at again every CHECK_POLL until the check is done.
        let mut idle_since: Option<Instant> = None;
        let available = loop {
            if self.reader.buffer().is_empty() {
                if self.failed.load(Ordering::SeqCst) {
                    return Err(SessionError::CommitFailed);
                }
                let wait = if self.checks.busy() {
                    CHECK_POLL
                } else {
                    let since = *idle_since.get_or_insert_with(|| {
                        self.slot.set_idle();
                        Instant::now()
                    });
                    let left = self
                        .shared
                        .limits
                        .idle_timeout
                        .saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(SessionError::Timeout("idle, waiting for a frame"));
                    }
                    left.min(FAILURE_POLL)
                };
                self.stream.set_read_timeout(Some(wait))?;
            }
            match self.reader.fill_buf() {
                Ok(bytes) => break bytes.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Looked at again above: a failure, the idle deadline.
                Err(e) if body::is_timeout(&e) => continue,
                // A TLS peer that hangs up between frames without saying
                // goodbye (close_notify; Python's ssl, for one, often does
                // not) ends as a plain socket's peer would: every file it
                // sent was whole, and was verified.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.encrypted => {
                    debug!(peer = %self.peer, "TLS peer closed without close_notify, between frames");
                    break 0;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if available == 0 {
            return Ok(None);
        }
        // Busy (not to be evicted for a newcomer) only once a whole frame
        // is in: a peer holding a connection with a byte or two of a frame
        // it never finishes stays as evictable as a silent one. Honest
        // frames arrive whole, in one segment.
        let frame = self.read_started_frame()?;
        self.slot.set_busy();
        Ok(frame)
    }

    /// Whether the client has sent bytes not yet read: in the buffer, or
    /// on the socket (a poll that does not wait; a closed peer counts, and
    /// is then read as the end it is).
    fn bytes_waiting(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let socket = self.reader.get_ref().socket();
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
    }

    /// Reads the frame that must follow a body. Unlike [`Self::next_frame`]
    /// it ignores a shutdown in progress: the upload is still running.
    /// Until the trailer starts, the wait is a body's (`--body-timeout`),
    /// not a header's: a client may still be hashing what it sent.
    /// `name` is the file's, for the reason given when it does not come.
    pub(super) fn read_trailer(&mut self, name: &str) -> Result<Option<Vec<u8>>, SessionError> {
        let late = |how| SessionError::TrailerTimeout(how, escape_for_display(name));
        if self.reader.buffer().is_empty() {
            self.queue(Job::Flush)?;
            let until = Instant::now() + self.shared.limits.body_timeout;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(late("waiting for"));
                }
                self.reader
                    .get_ref()
                    .socket()
                    .set_read_timeout(Some(left))?;
                match self.reader.fill_buf() {
                    Ok([]) => return Ok(None),
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if body::is_timeout(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match self.read_started_frame() {
            Err(SessionError::Timeout(_)) => Err(late("inside")),
            read => read,
        }
    }

    /// Reads one frame, which must arrive whole within the header timeout.
    fn read_started_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        let mut reader = Deadline {
            reader: &mut self.reader,
            until: Instant::now() + self.shared.limits.header_timeout,
        };
        match read_frame(&mut reader) {
            Ok(frame) => Ok(frame),
            Err(FrameError::Io(e)) if body::is_timeout(&e) => {
                Err(SessionError::Timeout("inside a header frame"))
            }
            // A socket that failed says nothing about the frame.
            Err(FrameError::Io(e)) => Err(SessionError::Io(e)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads through the session's buffer, failing once `until` has passed, so
/// a peer trickling one byte at a time cannot hold a header open forever.
struct Deadline<'r> {
    reader: &'r mut BufReader<Incoming>,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reader.buffer().is_empty() {
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.reader
                .get_ref()
                .socket()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        }
        self.reader.read(buf)
    }
}
