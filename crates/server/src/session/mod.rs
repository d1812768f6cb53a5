//! One client connection, from its first frame to its close.
//!
//! The first frame decides the dialect. A tutorial-style header starts a
//! legacy session: files follow one another until the client closes, and the
//! server never writes a byte back (such clients never read, and an unread
//! reply would turn their close into a reset). A `hello` starts a v1
//! session: every file is acked, and refusals are explained on the wire.
//!
//! Deadlines keep idle and trickling peers from holding a thread forever:
//! silence before a frame is bounded by the idle timeout, a started frame
//! must complete within the header timeout, and a body must keep moving.
//!
//! Its parts: `legacy` and `v1` (the two dialects) and `frames` (waiting
//! for a frame under those deadlines). This file sets the connection up,
//! hands received files to the committer (`commit.rs`) and receives bodies.

use std::io::{self, BufReader, BufWriter, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::path::escape_for_display;
use ferry_proto::{Ack, ErrorCode, FrameError, Mtime, Opening, Outcome, ProtoError, ServerMsg};
use thiserror::Error;
use tracing::{debug, warn};

use crate::Shared;
use crate::accept::Slot;
use crate::answer_pace::Paced;
use crate::auth::Check;
use crate::body::{self, BodyError, Digest, Received};
use crate::commit::{self, Checks, InMemory, Job};
use crate::storage::{Destination, FolderCache, Reservation, StoreError, Upload};
use crate::transport::{self, Incoming};

mod frames;
mod legacy;
mod v1;

/// Socket buffer sizes for reading bodies and writing acks.
const READ_BUFFER: usize = 256 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;

/// Most batches of jobs the session thread may queue ahead of the
/// committer, and how many jobs go in a batch. Handing jobs over in batches
/// keeps the two threads from waking each other for every small file. The
/// queue must hold more files than a group, so that receiving goes on while
/// the committer waits for a sync (measured: 4 batches left the session
/// thread idle for most of each sync on ext4; 16 cut 10,000 small files from
/// 0.59 s to 0.46 s; 64 gained nothing more).
const QUEUE_DEPTH: usize = 16;
const BATCH: usize = 32;

/// Longest a session waits for other uploads to be committed when uploads
/// hold their part of the open files (see `make_room`); normally a group
/// commit frees some within a fifth of a second.
const ROOM_WAIT: Duration = Duration::from_secs(5);

/// A body with at least this much still to arrive first has the files
/// before it committed and acked.
const ACK_BEFORE_BODY_BYTES: u64 = 1 << 20;

/// Why a session ended early. Each is logged as the reason.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// Escaped: serde's messages quote the client's bad values, and a
    /// newline in one could forge a log line.
    #[error("{}", escape_for_display(&.0.to_string()))]
    Proto(#[from] ProtoError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// A body that stopped short, and why: the log then says which file
    /// was cut, and where, whatever cut it.
    #[error("{cause} after {got} of {expected} bytes of `{name}`")]
    BodyCut {
        name: String,
        got: u64,
        expected: u64,
        cause: Box<SessionError>,
    },
    #[error("client left")]
    PeerLeft,
    #[error("the server shut down (its --grace period was over)")]
    ShutDown,
    #[error("refused `{name}`: {reason}")]
    Refused { name: String, reason: StoreError },
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error("refused: {0}")]
    Unauthorized(&'static str),
    #[error("refused: a plain (unencrypted) v1 connection from another machine")]
    PlainFromAfar,
    #[error(
        "tutorial-style upload refused: this server requires a token (--allow-legacy takes them anyway)"
    )]
    LegacyRefused,
    #[error("client left after the body of `{0}`, before its trailer")]
    NoTrailer(String),
    /// Waiting for the trailer to start, or for the rest of it.
    #[error("timed out {0} the `done` that follows the body of `{1}`")]
    TrailerTimeout(&'static str, String),
    #[error("the commit thread stopped the session (the reason is logged above)")]
    CommitFailed,
    #[error("the committer thread stopped")]
    CommitterGone,
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub(crate) struct Session<'a> {
    peer: SocketAddr,
    stream: TcpStream,
    reader: BufReader<Incoming>,
    /// Work for the committer, which also owns the socket's write side.
    jobs: Option<SyncSender<Vec<Job<'a>>>>,
    /// Jobs not yet handed over.
    batch: Vec<Job<'a>>,
    /// Raised by the committer when a file could not be stored.
    failed: &'a AtomicBool,
    /// Resumed files the committer is still checking.
    checks: &'a Checks,
    /// Small files received into memory that the committer is to write.
    in_memory: &'a InMemory,
    shared: &'a Shared,
    slot: &'a Slot,
    /// Whether this is a v1 client, which reads what the server writes.
    answered: bool,
    /// Whether the connection is TLS.
    encrypted: bool,
    /// The folder the last upload went to, kept open.
    folders: FolderCache,
    /// Files this connection has announced.
    files_seen: u64,
    /// Whether the client has been sent an `error` frame: it then knows
    /// why the connection ends.
    told: bool,
}

/// How long, and how much, a refused v1 client is read after the refusal.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

/// The folders a file's path goes through (all but its last part).
fn folders_of<'p>(parts: &'p [&'p str]) -> &'p [&'p str] {
    parts.split_last().map_or(&[], |(_, folders)| folders)
}

/// Serves one connection to its end and logs how it ended.
pub(crate) fn run(stream: TcpStream, peer: SocketAddr, shared: &Shared, slot: &Slot) {
    let setup = stream
        .set_nonblocking(false)
        // Acks are small and a pipelining client waits on none of them, but
        // the last one of a batch should not sit in Nagle's queue.
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_write_timeout(Some(shared.limits.body_timeout)))
        // The first bytes may be long in coming: a person at a tutorial
        // client's prompt is silent too.
        .and_then(|()| stream.set_read_timeout(Some(shared.limits.idle_timeout)))
        .and_then(|()| transport::open(&stream, shared.tls.as_ref()));
    let (read_half, write_half, encrypted) = match setup {
        Ok(halves) => halves,
        Err(e) if body::is_timeout(&e) => {
            warn!(%peer, "connection dropped: {}", SessionError::Timeout("idle, waiting for a frame"));
            return;
        }
        Err(e) => {
            warn!(%peer, "cannot set up connection: {e}");
            return;
        }
    };
    let failed = AtomicBool::new(false);
    let checks = Checks::default();
    let in_memory = InMemory::default();
    thread::scope(|scope| {
        // Every queued file is open: the queue gets a quarter of this
        // session's share, the committer's group another (see `make_room`).
        let depth = (shared.open_files_per_session() / 4 / BATCH).clamp(1, QUEUE_DEPTH);
        let (jobs, queue) = sync_channel(depth);
        let pace = body::MinRate::of(&shared.limits);
        let writer = BufWriter::with_capacity(WRITE_BUFFER, Paced::new(write_half, pace));
        let name = format!(
            "{}-commit",
            thread::current().name().unwrap_or("ferry-conn")
        );
        let committer = thread::Builder::new()
            .name(name)
            .spawn_scoped(scope, || commit::run(queue, writer, shared, peer, &failed));
        let committer = match committer {
            Ok(c) => c,
            Err(e) => {
                warn!(%peer, "cannot start a commit thread: {e}");
                return;
            }
        };
        let mut session = Session {
            peer,
            stream,
            reader: BufReader::with_capacity(READ_BUFFER, read_half),
            jobs: Some(jobs),
            batch: Vec::with_capacity(BATCH),
            failed: &failed,
            checks: &checks,
            in_memory: &in_memory,
            shared,
            slot,
            answered: false,
            encrypted,
            folders: FolderCache::default(),
            files_seen: 0,
            told: false,
        };
        // Blamed as it ends, not later: the grace period may run out
        // while the committer finishes, after a client that really left.
        let served = session.serve().map_err(|e| blame_shutdown(e, shared));
        if let Err(e) = &served {
            session.explain(e);
        }
        // Files received whole and verified are kept however the session
        // ends: hand over what is batched, then hang up so the committer
        // finishes.
        let handed = session.hand_over();
        session.jobs = None;
        let committed = committer.join().unwrap_or(Err(SessionError::CommitterGone));
        // A session the committer stopped ends for the committer's reason;
        // one that ended for its own keeps it, and the committer's is
        // logged too (it is logged nowhere else).
        let ended = match (served, committed) {
            (Err(SessionError::CommitFailed), Err(why)) => Err(why),
            (Err(own), Err(why)) => {
                warn!(%peer, "a file could not be stored: {why}");
                Err(own)
            }
            (served, committed) => served.and(handed).and(committed),
        };
        match ended {
            Ok(()) => debug!(%peer, "connection closed"),
            Err(e) => {
                warn!(%peer, "connection dropped: {e}");
                if session.answered {
                    session.linger();
                }
            }
        }
    });
}
/// Once the grace period is over the server closes what is still running:
/// a body cut then is not the client leaving.
fn blame_shutdown(e: SessionError, shared: &Shared) -> SessionError {
    match e {
        SessionError::BodyCut {
            name,
            got,
            expected,
            ..
        } if shared.dropping.load(Ordering::SeqCst) => SessionError::BodyCut {
            name,
            got,
            expected,
            cause: Box::new(SessionError::ShutDown),
        },
        e => e,
    }
}

impl<'a> Session<'a> {
    /// Closes gracefully after a refusal: a client still sending the refused
    /// body would otherwise get a reset, which can destroy the refusal ack
    /// before it reads it. Our side is closed for writing (the client sees
    /// the ack, then end of stream) and what it still sends is read and
    /// dropped, briefly and up to a bound.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let until = Instant::now() + LINGER_TIME;
        let mut drained = 0u64;
        while drained < LINGER_BYTES {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            // The raw socket, not through TLS: after a failure the session
            // may be in no state to decrypt, and the bytes are dropped anyway.
            let mut sink = [0u8; 64 * 1024];
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
    }

    fn serve(&mut self) -> Result<(), SessionError> {
        let Some(first) = self.next_frame()? else {
            debug!(peer = %self.peer, "closed without sending anything");
            return Ok(());
        };
        let opening = Opening::parse(&first);
        if opening.is_err() && Opening::is_v1(&first) {
            // A broken hello, or a file before any hello: the client reads
            // replies, so the error is sent to it as well as logged.
            self.answered = true;
        }
        match opening? {
            Opening::Legacy(_) if !self.shared.auth.legacy_allowed() => {
                // Such clients cannot carry a token, and never read a reply.
                Err(SessionError::LegacyRefused)
            }
            Opening::Legacy(header) => self.legacy(header),
            Opening::Hello { .. }
                if self.shared.tls.is_some()
                    && !self.encrypted
                    && !self.peer.ip().is_loopback() =>
            {
                // A token or a file sent in the clear from afar is exposed:
                // plain connections are for this machine only.
                self.answered = true;
                self.send(ServerMsg::Error {
                    code: ErrorCode::Unauthorized,
                    message: "this server takes connections from other machines over TLS only \
                              (use --tls)"
                        .into(),
                })?;
                self.queue(Job::Flush)?;
                Err(SessionError::PlainFromAfar)
            }
            Opening::Hello {
                version,
                client,
                token,
            } if self.shared.auth.required() => {
                // While a wrong token waits out its delay the session counts
                // as idle, so a crowd of guessers can be evicted for honest
                // clients.
                self.slot.set_idle();
                let (code, why) = match self.shared.auth.check(self.peer.ip(), token.as_deref()) {
                    Check::Pass => return self.v1(version, &client),
                    Check::Missing => (
                        ErrorCode::Unauthorized,
                        "this server needs a token, and none was given",
                    ),
                    Check::Wrong => (ErrorCode::Unauthorized, "the token given is wrong"),
                    // Not `unauthorized`: the token may well be right, and
                    // the client should say what the server says.
                    Check::TooSoon => (
                        ErrorCode::LimitReached,
                        "too many wrong tokens from this address lately: try again in a few seconds",
                    ),
                };
                self.answered = true;
                self.send(ServerMsg::Error {
                    code,
                    message: why.into(),
                })?;
                self.queue(Job::Flush)?;
                Err(SessionError::Unauthorized(why))
            }
            Opening::Hello {
                version, client, ..
            } => self.v1(version, &client),
        }
    }

    /// Checks a file's name and size and opens its upload: everything that
    /// can refuse a file before its first byte.
    fn start_file(
        &mut self,
        path: &str,
        size: u64,
    ) -> Result<(Vec<String>, Upload<'a>), StoreError> {
        let (parts, destination, reservation) = self.announce(path, size)?;
        let upload = self
            .shared
            .store
            .open_upload(&destination, &parts, reservation)?;
        debug!(peer = %self.peer, path = ?path, size, "receiving");
        Ok((parts, upload))
    }

    /// [`Session::start_file`] short of opening the file: checks the name
    /// and size, walks to (and makes) its folder and reserves room for it.
    fn announce(
        &mut self,
        path: &str,
        size: u64,
    ) -> Result<(Vec<String>, Destination, Reservation<'a>), StoreError> {
        let store = &self.shared.store;
        let parts = store.check_path(path)?;
        store.check_size(folders_of(&parts), size)?;
        let destination = store.destination(&parts, &mut self.folders)?;
        let reservation = store.reserve(&destination, size)?;
        Ok((
            parts.iter().map(|p| p.to_string()).collect(),
            destination,
            reservation,
        ))
    }

    /// Applies the server's permission bits and the sender's modification
    /// time. A file that cannot get its time is still stored.
    fn finish_metadata(&self, upload: &mut Upload<'_>, mtime: Option<Mtime>) {
        commit::finish_metadata(upload, self.shared.file_mode, mtime, self.peer);
    }

    fn ack(&mut self, id: u64, outcome: Outcome) -> Result<(), SessionError> {
        self.send(ServerMsg::Ack(Ack { id, outcome }))
    }

    /// Queues a message for the client, after everything queued before.
    fn send(&mut self, msg: ServerMsg) -> Result<(), SessionError> {
        self.told |= matches!(msg, ServerMsg::Error { .. });
        self.queue(Job::Send(msg))
    }

    /// Tells a v1 client why its connection is being dropped, when nothing
    /// on the wire has said so yet: a broken frame or message, or a
    /// deadline missed. Best effort: the client may not be reading.
    fn explain(&mut self, e: &SessionError) {
        if !self.answered || self.told {
            return;
        }
        let (code, message) = match e {
            SessionError::Frame(_) | SessionError::Proto(_) | SessionError::NoTrailer(_) => {
                (ErrorCode::Protocol, e.to_string())
            }
            SessionError::Timeout(_) | SessionError::TrailerTimeout(..) => {
                (ErrorCode::Timeout, e.to_string())
            }
            SessionError::BodyCut { cause, .. } if matches!(**cause, SessionError::Timeout(_)) => {
                (ErrorCode::Timeout, e.to_string())
            }
            // The code says the server is shutting down; the message says
            // what that cost this client.
            SessionError::BodyCut {
                name,
                got,
                expected,
                cause,
            } if matches!(**cause, SessionError::ShutDown) => (
                ErrorCode::ShuttingDown,
                format!(
                    "its grace period for uploads in progress is over, and `{name}` was not stored \
                     ({got} of {expected} bytes had come)"
                ),
            ),
            _ => return,
        };
        if self.send(ServerMsg::Error { code, message }).is_ok() {
            let _ = self.queue(Job::Flush);
        }
    }

    /// Counts one more file on this connection, or refuses it past
    /// `--max-files-per-connection`.
    fn count_file(&mut self) -> Result<(), StoreError> {
        let most = self.shared.limits.max_files_per_connection;
        self.files_seen += 1;
        if most > 0 && self.files_seen > most {
            return Err(StoreError::Limit(format!(
                "this server takes {most} files per connection; reconnect for more"
            )));
        }
        Ok(())
    }

    /// Queues a job; the batch goes to the committer when it is full or
    /// when the job asks for something to reach the client.
    fn queue(&mut self, job: Job<'a>) -> Result<(), SessionError> {
        let urgent = !matches!(job, Job::File(_) | Job::Unwritten(_));
        self.batch.push(job);
        if urgent || self.batch.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Every upload waiting for its commit holds an open file, and a
    /// session's queue and groups are sized by its share when it started.
    /// When the uploads of all sessions together hold half the open files
    /// meant for them (the rest is headroom: batches on their way, sockets,
    /// folders), this session hands its queue to the committer and waits a
    /// little for files to be closed (committers commit at least every
    /// `GROUP_MAX_AGE`), rather than failing the next file with "too many
    /// open files".
    fn make_room(&mut self) -> Result<(), SessionError> {
        let budget = usize::try_from(self.shared.limits.open_files / 2).unwrap_or(usize::MAX);
        if self.shared.store.open_uploads() < budget {
            return Ok(());
        }
        self.queue(Job::Flush)?;
        debug!(peer = %self.peer, "waiting for open files to be committed");
        let deadline = Instant::now() + ROOM_WAIT;
        while self.shared.store.open_uploads() >= budget && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        // Past the deadline the open is tried anyway; a failure is a
        // refusal like any other.
        Ok(())
    }

    /// Waits until no resumed file of this connection is being checked:
    /// each check reads a whole kept part on a thread of its own, so a
    /// client resuming many files back to back gets them checked one at a
    /// time. (Ferry's own client waits for each resumed file's ack anyway.)
    fn wait_for_checks(&mut self) -> Result<(), SessionError> {
        if !self.checks.busy() {
            return Ok(());
        }
        self.queue(Job::Flush)?;
        while self.checks.busy() && !self.failed.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), SessionError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let jobs = self.jobs.as_ref().ok_or(SessionError::CommitterGone)?;
        jobs.send(batch).map_err(|_| SessionError::CommitterGone)
    }

    /// Copies exactly `size` body bytes into `upload`, with the body timeout
    /// in force, hashing them as `digest` says.
    fn receive_body(
        &mut self,
        upload: &mut Upload<'_>,
        name: &str,
        size: u64,
        digest: Digest,
    ) -> Result<Received, BodyError> {
        self.before_body(size)?;
        let min_rate = self.min_rate();
        body::receive(
            &mut self.reader,
            upload,
            name,
            size,
            &self.shared.writer_slots,
            digest,
            min_rate,
        )
    }

    /// Reads a small body of exactly `size` bytes into memory, with the
    /// body timeout in force; returns it and its digest.
    fn receive_body_to_memory(
        &mut self,
        name: &str,
        size: usize,
    ) -> Result<(Vec<u8>, blake3::Hash), BodyError> {
        self.before_body(size as u64)?;
        let min_rate = self.min_rate();
        body::receive_to_memory(&mut self.reader, name, size, min_rate)
    }

    fn min_rate(&self) -> body::MinRate {
        body::MinRate::of(&self.shared.limits)
    }

    /// Gets ready to read a body of `size` bytes.
    fn before_body(&mut self, size: u64) -> Result<(), BodyError> {
        let to_read = size.saturating_sub(self.reader.buffer().len() as u64);
        if to_read >= ACK_BEFORE_BODY_BYTES {
            // This body will take a while: get earlier files committed and
            // acked first instead of leaving them waiting behind it.
            self.queue(Job::Flush).map_err(BodyError::Wire)?;
        }
        // A body already sitting in the buffer needs no read, so no timeout:
        // skipping the system call matters when files are a few KiB each.
        if to_read > 0 {
            // The rest may be slow to come: let the committer have the files
            // before it, to commit them when they are due.
            self.hand_over().map_err(BodyError::Wire)?;
            self.stream
                .set_read_timeout(Some(self.shared.limits.body_timeout))
                .map_err(|e| BodyError::Wire(e.into()))?;
        }
        Ok(())
    }
}
