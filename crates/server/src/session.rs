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

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_proto::path::escape_for_display;
use ferry_proto::{
    Ack, ClientMsg, ErrorCode, FileHeader, FrameError, LegacyHeader, OnClash, Opening, Outcome,
    PROTOCOL_VERSION, ProtoError, ServerMsg, read_frame, to_body, write_frame,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::accept::Slot;
use crate::storage::{Finished, Store, StoreError, Upload};

/// Socket buffer sizes for reading bodies and writing acks.
const READ_BUFFER: usize = 256 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;

/// Files at least this big are committed on their own, right away; smaller
/// ones wait to be committed as a group (see [`Store::commit_group`]).
const SOLO_COMMIT_BYTES: u64 = 1 << 20;
/// A group is committed when it has this many files...
const GROUP_MAX_FILES: usize = 256;
/// ...or when its oldest file has waited this long, so acks keep flowing
/// while a client streams many small files.
const GROUP_MAX_AGE: Duration = Duration::from_millis(100);

/// A received, verified file waiting for its commit.
struct Pending<'s> {
    /// The v1 id to ack; `None` for a tutorial client, which gets no ack.
    id: Option<u64>,
    path: String,
    size: u64,
    started: Instant,
    finished: Finished<'s>,
}

/// Why a session ended early. Each is logged as the reason.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("client left after {got} of {expected} bytes of `{name}`")]
    PeerLeft {
        name: String,
        got: u64,
        expected: u64,
    },
    #[error("refused `{name}`: {reason}")]
    Refused { name: String, reason: StoreError },
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A body that did not arrive whole, either side's fault.
enum BodyError {
    Store(StoreError),
    Wire(SessionError),
}

pub(crate) struct Session<'a> {
    peer: SocketAddr,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    shared: &'a Shared,
    slot: &'a Slot,
    /// Whether this is a v1 client, which reads what the server writes.
    answered: bool,
    /// Verified files not yet committed, oldest first.
    pending: Vec<Pending<'a>>,
}

/// How long, and how much, a refused v1 client is read after the refusal.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

/// Serves one connection to its end and logs how it ended.
pub(crate) fn run(stream: TcpStream, peer: SocketAddr, shared: &Shared, slot: &Slot) {
    let session = match Session::new(stream, peer, shared, slot) {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, "cannot set up connection: {e}");
            return;
        }
    };
    let mut session = session;
    let served = session.serve();
    // Files received whole and verified are kept, however the session ends.
    let committed = session.commit_pending();
    match served.and(committed) {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(e) => {
            warn!(%peer, "connection dropped: {e}");
            if session.answered {
                session.linger();
            }
        }
    }
}

impl<'a> Session<'a> {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shared: &'a Shared,
        slot: &'a Slot,
    ) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        // Acks are small and a pipelining client waits on none of them, but
        // the last one of a batch should not sit in Nagle's queue.
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(shared.limits.body_timeout))?;
        Ok(Session {
            peer,
            reader: BufReader::with_capacity(READ_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(WRITE_BUFFER, stream.try_clone()?),
            stream,
            shared,
            slot,
            answered: false,
            pending: Vec::new(),
        })
    }

    /// Closes gracefully after a refusal: a client still sending the refused
    /// body would otherwise get a reset, which can destroy the refusal ack
    /// before it reads it. Our side is closed for writing (the client sees
    /// the ack, then end of stream) and what it still sends is read and
    /// dropped, briefly and up to a bound.
    fn linger(&mut self) {
        let _ = self.writer.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let until = Instant::now() + LINGER_TIME;
        let mut drained = 0u64;
        while drained < LINGER_BYTES {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.reader.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(bytes) => {
                    let n = bytes.len();
                    drained += n as u64;
                    self.reader.consume(n);
                }
            }
        }
    }

    fn serve(&mut self) -> Result<(), SessionError> {
        let Some(first) = self.next_frame()? else {
            debug!(peer = %self.peer, "closed without sending anything");
            return Ok(());
        };
        match Opening::parse(&first)? {
            Opening::Legacy(header) => self.legacy(header),
            Opening::Hello { version, client } => self.v1(version, &client),
        }
    }

    /// Tutorial-style uploads: header, bytes, header, bytes, close.
    fn legacy(&mut self, mut header: LegacyHeader) -> Result<(), SessionError> {
        debug!(peer = %self.peer, "legacy client");
        loop {
            self.receive_legacy(&header)?;
            match self.next_frame()? {
                Some(body) => header = LegacyHeader::parse(&body)?,
                None => return Ok(()),
            }
        }
    }

    fn receive_legacy(&mut self, header: &LegacyHeader) -> Result<(), SessionError> {
        let started = Instant::now();
        let name = &header.filename;
        let refused = |reason| SessionError::Refused {
            name: escape_for_display(name),
            reason,
        };
        let shared = self.shared;
        let store = &shared.store;
        let parts = store.check_path(name).map_err(refused)?;
        store.check_size(header.size).map_err(refused)?;
        let mut upload = store.begin(&parts).map_err(refused)?;
        let digest = match self.receive_body(&mut upload, name, header.size) {
            Ok(d) => d,
            Err(BodyError::Store(e)) => return Err(refused(e)),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        self.hold(Pending {
            id: None,
            path: name.clone(),
            size: header.size,
            started,
            finished: Finished {
                upload,
                parts: parts.iter().map(|p| p.to_string()).collect(),
                policy: OnClash::Rename,
                digest,
            },
        })
    }

    /// Ferry v1: handshake, then acked files and folders.
    fn v1(&mut self, version: u32, client: &str) -> Result<(), SessionError> {
        if version != PROTOCOL_VERSION {
            self.answered = true;
            self.send(&ServerMsg::Error {
                code: ErrorCode::UnsupportedVersion,
                message: format!("this server speaks Ferry protocol version {PROTOCOL_VERSION}"),
            })?;
            self.writer.flush()?;
            return Err(SessionError::Version(version));
        }
        self.answered = true;
        debug!(peer = %self.peer, client = %escape_for_display(client), "v1 client");
        self.send(&ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            server: format!("ferry-server/{}", env!("CARGO_PKG_VERSION")),
            max_file_size: self.shared.store.max_file_size(),
        })?;
        loop {
            let Some(body) = self.next_frame()? else {
                if self.shared.shutting_down.load(Ordering::SeqCst) {
                    // Best effort: the client may already be gone.
                    let _ = self.send(&ServerMsg::Error {
                        code: ErrorCode::ShuttingDown,
                        message: "the server is shutting down".into(),
                    });
                }
                self.writer.flush()?;
                return Ok(());
            };
            match ClientMsg::parse(&body) {
                Ok(ClientMsg::File(header)) => self.receive_v1(&header)?,
                Ok(ClientMsg::Mkdir { id, path }) => self.mkdir(id, &path)?,
                Ok(other) => {
                    let message = format!("unexpected `{}` message", other.kind());
                    return self.protocol_error(message);
                }
                Err(e) => return self.protocol_error(e.to_string()),
            }
        }
    }

    fn protocol_error(&mut self, message: String) -> Result<(), SessionError> {
        let _ = self.commit_pending();
        self.send(&ServerMsg::Error {
            code: ErrorCode::Protocol,
            message: message.clone(),
        })?;
        self.writer.flush()?;
        Err(ProtoError::Unexpected(message).into())
    }

    fn receive_v1(&mut self, header: &FileHeader) -> Result<(), SessionError> {
        let started = Instant::now();
        let shared = self.shared;
        let store = &shared.store;
        let checked = store
            .check_path(&header.path)
            .and_then(|parts| store.check_size(header.size).map(|()| parts))
            .and_then(|parts| store.begin(&parts).map(|up| (parts, up)));
        let (parts, mut upload) = match checked {
            Ok(ok) => ok,
            Err(e) => return self.refuse(header, e),
        };
        let digest = match self.receive_body(&mut upload, &header.path, header.size) {
            Ok(d) => d,
            Err(BodyError::Store(e)) => return self.refuse(header, e),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        let trailer = self.read_trailer()?.ok_or_else(|| SessionError::PeerLeft {
            name: escape_for_display(&header.path),
            got: header.size,
            expected: header.size,
        })?;
        match ClientMsg::parse(&trailer)? {
            ClientMsg::Done { id, blake3 } if id == header.id => {
                if blake3 != digest.to_hex().as_str() {
                    warn!(peer = %self.peer, name = ?&header.path,
                        "digest mismatch: received bytes hash to {digest}, sender announced {}",
                        escape_for_display(&blake3));
                    return self.ack_failed(
                        header.id,
                        ErrorCode::DigestMismatch,
                        "the bytes received do not match the digest sent; nothing was stored"
                            .into(),
                    );
                }
                self.hold(Pending {
                    id: Some(header.id),
                    path: header.path.clone(),
                    size: header.size,
                    started,
                    finished: Finished {
                        upload,
                        parts: parts.iter().map(|p| p.to_string()).collect(),
                        policy: header.on_clash,
                        digest,
                    },
                })
            }
            ClientMsg::Abort { id, reason } if id == header.id => {
                info!(peer = %self.peer, name = ?&header.path,
                    "sender aborted the file: {}", escape_for_display(&reason));
                self.ack_failed(
                    header.id,
                    ErrorCode::Aborted,
                    format!("aborted by the sender: {reason}"),
                )
            }
            other => self.protocol_error(format!(
                "expected `done` for file {}, got `{}`",
                header.id,
                other.kind()
            )),
        }
    }

    /// Queues a verified file for commit, committing the queue when it is
    /// full, old, or holds a big file.
    fn hold(&mut self, pending: Pending<'a>) -> Result<(), SessionError> {
        let big = pending.size >= SOLO_COMMIT_BYTES;
        self.pending.push(pending);
        let old = self
            .pending
            .first()
            .is_some_and(|p| p.started.elapsed() >= GROUP_MAX_AGE);
        if big || old || self.pending.len() >= GROUP_MAX_FILES {
            self.commit_pending()?;
        }
        Ok(())
    }

    /// Commits every queued file, logs and acks each, and flushes the acks.
    /// Fails (ending the session) if any could not be stored.
    fn commit_pending(&mut self) -> Result<(), SessionError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let queue = std::mem::take(&mut self.pending);
        let mut finished = Vec::with_capacity(queue.len());
        let mut meta = Vec::with_capacity(queue.len());
        for p in queue {
            meta.push((p.id, p.path, p.size, p.started, p.finished.digest));
            finished.push(p.finished);
        }
        let results = commit(&self.shared.store, finished);
        let mut failure = None;
        for ((id, path, size, started, digest), result) in meta.into_iter().zip(results) {
            let outcome = match result {
                Ok(stored) => {
                    let dialect = if id.is_some() { "v1" } else { "legacy" };
                    self.log_stored(&stored.stored_as, size, started, dialect);
                    Outcome::Stored {
                        stored_as: stored.stored_as,
                        bytes: size,
                        blake3: digest.to_hex().to_string(),
                        clash: stored.clash,
                    }
                }
                Err(reason) => {
                    let outcome = Outcome::Failed {
                        code: error_code(&reason),
                        message: reason.to_string(),
                    };
                    failure.get_or_insert(SessionError::Refused {
                        name: escape_for_display(&path),
                        reason,
                    });
                    outcome
                }
            };
            if let Some(id) = id {
                // A client that is gone cannot read acks; the files are
                // stored all the same, so carry on logging them.
                let _ = self.ack(id, outcome);
            }
        }
        let _ = self.writer.flush();
        failure.map_or(Ok(()), Err)
    }

    fn mkdir(&mut self, id: u64, path: &str) -> Result<(), SessionError> {
        self.commit_pending()?;
        match self.shared.store.mkdir(path) {
            Ok(path) => self.ack(id, Outcome::Folder { path }),
            Err(reason) => {
                let code = error_code(&reason);
                let message = reason.to_string();
                self.ack_failed(id, code, message)?;
                Err(SessionError::Refused {
                    name: escape_for_display(path),
                    reason,
                })
            }
        }
    }

    /// Answers a refused file and ends the session: its body (if any is
    /// left) cannot be told apart from the next frame.
    fn refuse(&mut self, header: &FileHeader, reason: StoreError) -> Result<(), SessionError> {
        // Earlier files are complete: store and ack them first. Their own
        // failures, if any, are acked inside; the session ends either way.
        let _ = self.commit_pending();
        self.ack_failed(header.id, error_code(&reason), reason.to_string())?;
        self.writer.flush()?;
        Err(SessionError::Refused {
            name: escape_for_display(&header.path),
            reason,
        })
    }

    fn ack_failed(
        &mut self,
        id: u64,
        code: ErrorCode,
        message: String,
    ) -> Result<(), SessionError> {
        self.ack(id, Outcome::Failed { code, message })
    }

    fn ack(&mut self, id: u64, outcome: Outcome) -> Result<(), SessionError> {
        self.send(&ServerMsg::Ack(Ack { id, outcome }))
    }

    fn send(&mut self, msg: &ServerMsg) -> Result<(), SessionError> {
        write_frame(&mut self.writer, &to_body(msg))?;
        Ok(())
    }

    /// Copies exactly `size` body bytes into `upload`, hashing as it goes.
    fn receive_body(
        &mut self,
        upload: &mut Upload<'_>,
        name: &str,
        size: u64,
    ) -> Result<blake3::Hash, BodyError> {
        self.stream
            .set_read_timeout(Some(self.shared.limits.body_timeout))
            .map_err(|e| BodyError::Wire(e.into()))?;
        let mut hasher = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    return Err(BodyError::Wire(SessionError::Timeout(
                        "waiting for body bytes",
                    )));
                }
                Err(e) => return Err(BodyError::Wire(e.into())),
            };
            if chunk.is_empty() {
                return Err(BodyError::Wire(SessionError::PeerLeft {
                    name: escape_for_display(name),
                    got: size - left,
                    expected: size,
                }));
            }
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            hasher.update(&chunk[..n]);
            upload.write_all(&chunk[..n]).map_err(BodyError::Store)?;
            self.reader.consume(n);
            left -= n as u64;
        }
        Ok(hasher.finalize())
    }

    /// Waits for the next frame. `Ok(None)` is a clean close between frames,
    /// or a shutdown in progress.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        let stopping = self.shared.shutting_down.load(Ordering::SeqCst);
        if self.reader.buffer().is_empty() || stopping {
            // About to block (or stop): commit what is waiting and get the
            // acks to the client.
            self.commit_pending()?;
            self.writer.flush()?;
        }
        self.slot.set_idle();
        if stopping {
            return Ok(None);
        }
        let limits = &self.shared.limits;
        if self.reader.buffer().is_empty() {
            self.stream.set_read_timeout(Some(limits.idle_timeout))?;
        }
        let available = loop {
            match self.reader.fill_buf() {
                Ok(bytes) => break bytes.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    return Err(SessionError::Timeout("idle, waiting for a frame"));
                }
                Err(e) => return Err(e.into()),
            }
        };
        if available == 0 {
            return Ok(None);
        }
        self.slot.set_busy();
        self.read_started_frame()
    }

    /// Reads the frame that must follow a body. Unlike [`Self::next_frame`]
    /// it ignores a shutdown in progress: the upload is still running.
    fn read_trailer(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        if self.reader.buffer().is_empty() {
            self.writer.flush()?;
        }
        self.read_started_frame()
    }

    /// Reads one frame, which must arrive whole within the header timeout.
    fn read_started_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        let mut reader = Deadline {
            reader: &mut self.reader,
            until: Instant::now() + self.shared.limits.header_timeout,
        };
        match read_frame(&mut reader) {
            Ok(frame) => Ok(frame),
            Err(FrameError::Io(e)) if is_timeout(&e) => {
                Err(SessionError::Timeout("inside a header frame"))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn log_stored(&self, stored_as: &str, bytes: u64, started: Instant, dialect: &str) {
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        info!(
            peer = %self.peer,
            name = ?stored_as,
            bytes,
            secs = format_args!("{secs:.3}"),
            rate = %format_args!("{}/s", humansize::format_size(rate as u64, humansize::BINARY)),
            dialect,
            "stored"
        );
    }
}

/// Commits one file on its own (fsync of file and folder), or a group with
/// two file-system syncs for all.
fn commit(
    store: &Store,
    mut files: Vec<Finished<'_>>,
) -> Vec<Result<crate::storage::Stored, StoreError>> {
    if files.len() == 1 {
        if let Some(f) = files.pop() {
            let parts: Vec<&str> = f.parts.iter().map(String::as_str).collect();
            return vec![f.upload.commit(&parts, f.policy, &f.digest)];
        }
    }
    store.commit_group(files)
}

/// Reads through the session's buffer, failing once `until` has passed, so
/// a peer trickling one byte at a time cannot hold a header open forever.
struct Deadline<'r> {
    reader: &'r mut BufReader<TcpStream>,
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
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        }
        self.reader.read(buf)
    }
}

/// Socket read timeouts surface as `WouldBlock` on Unix.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The wire code for a storage refusal.
fn error_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::BadName(_) => ErrorCode::BadName,
        StoreError::TooLarge { .. } => ErrorCode::TooLarge,
        StoreError::NoSpace { .. } => ErrorCode::NoSpace,
        StoreError::Exists(_) => ErrorCode::Exists,
        StoreError::Io(_) => ErrorCode::Io,
    }
}
