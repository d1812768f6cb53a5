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

use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use ferry_proto::path::{canonical, escape_for_display};
use ferry_proto::{
    Ack, ClientMsg, ErrorCode, FileHeader, FrameError, LegacyHeader, Mtime, OnClash, Opening,
    Outcome, PROTOCOL_VERSION, ProtoError, ServerMsg, read_frame,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::accept::Slot;
use crate::body::{self, BodyError, Digest, Received};
use crate::commit::{self, Checks, Job, Pending, Receipt, ResumeCheck};
use crate::storage::{self, Finished, FolderCache, StoreError, Upload};
use crate::transport::{self, Incoming};

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

/// Most files one plan message may ask about: the answer must fit in a
/// frame, and stored-as names can be long.
const MAX_PLAN_FILES: usize = 256;

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
    #[error("refused: missing or wrong token")]
    Unauthorized,
    #[error("refused: a plain (unencrypted) v1 connection from another machine")]
    PlainFromAfar,
    #[error(
        "tutorial-style upload refused: this server requires a token (--allow-legacy takes them anyway)"
    )]
    LegacyRefused,
    #[error("client left after the body of `{0}`, before its trailer")]
    NoTrailer(String),
    #[error("an upload could not be stored (logged above)")]
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
}

/// How often a session waiting for its client looks again whether one of
/// its resumed files is still being checked.
const CHECK_POLL: Duration = Duration::from_secs(1);

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
    thread::scope(|scope| {
        // Every queued file is open: the queue gets a quarter of this
        // session's share, the committer's group another (see `make_room`).
        let depth = (shared.open_files_per_session() / 4 / BATCH).clamp(1, QUEUE_DEPTH);
        let (jobs, queue) = sync_channel(depth);
        let writer = BufWriter::with_capacity(WRITE_BUFFER, write_half);
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
            shared,
            slot,
            answered: false,
            encrypted,
            folders: FolderCache::default(),
            files_seen: 0,
        };
        let served = session.serve();
        // Files received whole and verified are kept however the session
        // ends: hand over what is batched, then hang up so the committer
        // finishes.
        let handed = session.hand_over();
        session.jobs = None;
        let committed = committer.join().unwrap_or(Err(SessionError::CommitterGone));
        match served.and(handed).and(committed) {
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
        match Opening::parse(&first)? {
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
            // While a wrong token waits out its delay the session counts as
            // idle, so a crowd of guessers can be evicted for honest clients.
            Opening::Hello { token, .. }
                if self.shared.auth.required()
                    && !{
                        self.slot.set_idle();
                        self.shared.auth.check(self.peer.ip(), token.as_deref())
                    } =>
            {
                self.answered = true;
                self.send(ServerMsg::Error {
                    code: ErrorCode::Unauthorized,
                    message: "this server needs a token, and the one given is missing or wrong"
                        .into(),
                })?;
                self.queue(Job::Flush)?;
                Err(SessionError::Unauthorized)
            }
            Opening::Hello {
                version, client, ..
            } => self.v1(version, &client),
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
        self.make_room()?;
        let started = Instant::now();
        let name = &canonical(&header.filename).into_owned();
        let refused = |reason| SessionError::Refused {
            name: escape_for_display(name),
            reason,
        };
        let (parts, mut upload) = self.start_file(name, header.size).map_err(refused)?;
        let digest = match self.receive_body(&mut upload, name, header.size, Digest::Incoming) {
            Ok(Received::Known(d)) => d,
            // Tutorial clients never resume; were one to, wait here.
            Ok(Received::Trailing(trailing)) => trailing
                .finish(&self.shared.dropping)
                .map_err(|e| refused(StoreError::Io(e)))?,
            Err(BodyError::Store(e)) => return Err(refused(e)),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        self.finish_metadata(&mut upload, None);
        self.queue(Job::File(Pending {
            receipt: Receipt {
                id: None,
                path: name.clone(),
                size: header.size,
                took: started.elapsed(),
                digest,
            },
            finished: Finished {
                upload,
                parts,
                policy: OnClash::Rename,
                digest,
            },
            check: None,
        }))
    }

    /// Checks a file's name and size and opens its upload: everything that
    /// can refuse a file before its first byte.
    fn start_file(
        &mut self,
        path: &str,
        size: u64,
    ) -> Result<(Vec<String>, Upload<'a>), StoreError> {
        let store = &self.shared.store;
        let parts = store.check_path(path)?;
        store.check_size(folders_of(&parts), size)?;
        let upload = store.begin(&parts, size, &mut self.folders)?;
        debug!(peer = %self.peer, path = ?path, size, "receiving");
        Ok((parts.iter().map(|p| p.to_string()).collect(), upload))
    }

    /// Ferry v1: handshake, then acked files and folders.
    fn v1(&mut self, version: u32, client: &str) -> Result<(), SessionError> {
        if version != PROTOCOL_VERSION {
            self.answered = true;
            self.send(ServerMsg::Error {
                code: ErrorCode::UnsupportedVersion,
                message: format!("this server speaks Ferry protocol version {PROTOCOL_VERSION}"),
            })?;
            self.queue(Job::Flush)?;
            return Err(SessionError::Version(version));
        }
        self.answered = true;
        debug!(peer = %self.peer, client = %escape_for_display(client), "v1 client");
        self.send(ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            server: format!("ferry-server/{}", env!("CARGO_PKG_VERSION")),
            max_file_size: self.shared.store.max_file_size(),
        })?;
        loop {
            let Some(body) = self.next_frame()? else {
                if self.shared.shutting_down.load(Ordering::SeqCst) {
                    // Best effort: the client may already be gone.
                    let _ = self.send(ServerMsg::Error {
                        code: ErrorCode::ShuttingDown,
                        message: "the server is shutting down".into(),
                    });
                }
                self.queue(Job::Flush)?;
                return Ok(());
            };
            match ClientMsg::parse(&body) {
                Ok(ClientMsg::File(header)) => self.receive_v1(&header)?,
                Ok(ClientMsg::Mkdir { id, path }) => self.mkdir(id, &path)?,
                Ok(ClientMsg::Plan { files }) if files.len() <= MAX_PLAN_FILES => {
                    let verdicts = self.shared.store.verdicts(&files);
                    self.send(ServerMsg::Plan { verdicts })?;
                }
                Ok(ClientMsg::Plan { files }) => {
                    return self.protocol_error(format!(
                        "a plan may ask about {MAX_PLAN_FILES} files at most, not {}",
                        files.len()
                    ));
                }
                Ok(other) => {
                    let message = format!("unexpected `{}` message", other.kind());
                    return self.protocol_error(message);
                }
                Err(e) => return self.protocol_error(e.to_string()),
            }
        }
    }

    fn protocol_error(&mut self, message: String) -> Result<(), SessionError> {
        self.send(ServerMsg::Error {
            code: ErrorCode::Protocol,
            message: message.clone(),
        })?;
        self.queue(Job::Flush)?;
        Err(ProtoError::Unexpected(message).into())
    }

    fn receive_v1(&mut self, header: &FileHeader) -> Result<(), SessionError> {
        self.make_room()?;
        let started = Instant::now();
        // Look-alike names (NFC and NFD spellings) become one; the ack's
        // stored_as shows the name used.
        let normalized;
        let header = match canonical(&header.path) {
            Cow::Borrowed(_) => header,
            Cow::Owned(path) => {
                normalized = FileHeader {
                    path,
                    ..header.clone()
                };
                &normalized
            }
        };
        let most = self.shared.limits.max_files_per_connection;
        self.files_seen += 1;
        if most > 0 && self.files_seen > most {
            return self.refuse(
                header,
                StoreError::Limit(format!(
                    "this server takes {most} files per connection; reconnect for more"
                )),
            );
        }
        if header.offset > 0 {
            self.wait_for_checks()?;
        }
        let (parts, mut upload, hashing) = match self.start_v1_file(header) {
            Ok(ok) => ok,
            Err(e) => return self.refuse(header, e),
        };
        let body_len = header.size - header.offset;
        let received = match self.receive_body(&mut upload, &header.path, body_len, hashing) {
            Ok(received) => received,
            Err(BodyError::Store(e)) => return self.refuse(header, e),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        let trailer = self
            .read_trailer()?
            .ok_or_else(|| SessionError::NoTrailer(escape_for_display(&header.path)))?;
        match ClientMsg::parse(&trailer)? {
            ClientMsg::Done { id, blake3 } if id == header.id => {
                // A resumed file's hash is still being made from the file:
                // the committer compares it with the sender's before
                // committing, and the session reads on meanwhile.
                let (digest, check) = match received {
                    Received::Known(digest) if blake3 == digest.to_hex().as_str() => (digest, None),
                    Received::Trailing(trailing) => match blake3::Hash::from_hex(&blake3) {
                        Ok(announced) => (
                            announced,
                            Some(Box::new(ResumeCheck {
                                hash: trailing,
                                counted: self.checks.ticket(),
                            })),
                        ),
                        Err(_) => return self.mismatch(header, upload, &blake3, None),
                    },
                    Received::Known(digest) => {
                        return self.mismatch(header, upload, &blake3, Some(digest));
                    }
                };
                self.finish_metadata(&mut upload, header.mtime);
                self.queue(Job::File(Pending {
                    receipt: Receipt {
                        id: Some(header.id),
                        path: header.path.clone(),
                        size: header.size,
                        took: started.elapsed(),
                        digest,
                    },
                    finished: Finished {
                        upload,
                        parts,
                        policy: header.on_clash,
                        digest,
                    },
                    check,
                }))
            }
            ClientMsg::Abort { id, reason } if id == header.id => {
                info!(peer = %self.peer, name = ?&header.path,
                    "sender aborted the file: {}", escape_for_display(&reason));
                upload.discard();
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

    /// Opens a v1 upload: a plain one, or one kept under a name so it can
    /// be resumed (when the sender gives a key and the file is big enough),
    /// possibly resuming at the header's offset. Returns how the body is to
    /// be hashed: for a resume, the digest also covers the kept bytes.
    fn start_v1_file(
        &mut self,
        header: &FileHeader,
    ) -> Result<(Vec<String>, Upload<'a>, Digest), StoreError> {
        let resumable = header.size >= storage::RESUMABLE_MIN;
        match (&header.resume_key, resumable) {
            (Some(key), true) if header.offset <= header.size => {
                let store = &self.shared.store;
                let parts = store.check_path(&header.path)?;
                store.check_size(folders_of(&parts), header.size - header.offset)?;
                let (upload, kept_hash) = match store.begin_resumable(
                    &parts,
                    &mut self.folders,
                    key,
                    header.size,
                    header.offset,
                ) {
                    // Someone else is on it: this copy goes unresumable.
                    Err(StoreError::PartialBusy | StoreError::Unresumable(_))
                        if header.offset == 0 =>
                    {
                        let (parts, upload) = self.start_file(&header.path, header.size)?;
                        return Ok((parts, upload, Digest::Incoming));
                    }
                    other => other?,
                };
                if header.offset > 0 {
                    info!(peer = %self.peer, path = ?header.path, offset = header.offset, "resuming");
                } else {
                    debug!(peer = %self.peer, path = ?header.path, size = header.size, "receiving");
                }
                let hashing = match kept_hash {
                    Some(trailing) => Digest::Trailing(trailing),
                    None => Digest::Incoming,
                };
                Ok((
                    parts.iter().map(|p| p.to_string()).collect(),
                    upload,
                    hashing,
                ))
            }
            _ if header.offset > 0 => Err(StoreError::ResumeMismatch(
                "resuming needs a resume key, a file of 1 MiB or more and an offset inside it"
                    .into(),
            )),
            _ => {
                let (parts, upload) = self.start_file(&header.path, header.size)?;
                Ok((parts, upload, Digest::Incoming))
            }
        }
    }

    /// Applies the server's permission bits and the sender's modification
    /// time. A file that cannot get its time is still stored.
    fn finish_metadata(&self, upload: &mut Upload<'_>, mtime: Option<Mtime>) {
        if let Err(e) = upload.set_mode(self.shared.file_mode) {
            warn!(peer = %self.peer, "cannot set a stored file's mode: {e}");
        }
        if let Some(m) = mtime {
            if let Err(e) = upload.set_mtime(m.secs, m.nanos) {
                warn!(peer = %self.peer, "cannot set a stored file's time: {e}");
            }
        }
    }

    fn mkdir(&mut self, id: u64, path: &str) -> Result<(), SessionError> {
        match self.shared.store.mkdir(&canonical(path)) {
            Ok(path) => self.ack(id, Outcome::Folder { path }),
            Err(reason) => {
                let code = reason.code();
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
        self.ack_failed(header.id, reason.code(), reason.to_string())?;
        self.queue(Job::Flush)?;
        Err(SessionError::Refused {
            name: escape_for_display(&header.path),
            reason,
        })
    }

    /// The file does not hash to what its sender announced: nothing of it
    /// is kept (a kept partial that led here included), and the client is
    /// told; the connection goes on.
    fn mismatch(
        &mut self,
        header: &FileHeader,
        upload: Upload<'a>,
        announced: &str,
        received: Option<blake3::Hash>,
    ) -> Result<(), SessionError> {
        let received = received.map_or_else(|| "(not checked)".to_string(), |d| d.to_string());
        warn!(peer = %self.peer, name = ?&header.path,
            "digest mismatch: received bytes hash to {received}, sender announced {}",
            escape_for_display(announced));
        upload.discard();
        let (code, message) = commit::mismatch_outcome(header.offset > 0);
        self.ack_failed(header.id, code, message.into())
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
        self.send(ServerMsg::Ack(Ack { id, outcome }))
    }

    /// Queues a message for the client, after everything queued before.
    fn send(&mut self, msg: ServerMsg) -> Result<(), SessionError> {
        self.queue(Job::Send(msg))
    }

    /// Queues a job; the batch goes to the committer when it is full or
    /// when the job asks for something to reach the client.
    fn queue(&mut self, job: Job<'a>) -> Result<(), SessionError> {
        let urgent = !matches!(job, Job::File(_));
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
        body::receive(
            &mut self.reader,
            upload,
            name,
            size,
            &self.shared.writer_slots,
            digest,
            body::MinRate {
                bytes_per_sec: self.shared.limits.min_rate,
                window: self.shared.limits.body_timeout,
            },
        )
    }

    /// Waits for the next frame. `Ok(None)` is a clean close between frames,
    /// or a shutdown in progress.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(SessionError::CommitFailed);
        }
        let stopping = self.shared.shutting_down.load(Ordering::SeqCst);
        if self.reader.buffer().is_empty() || stopping {
            // About to block (or stop): have what is waiting committed and
            // the acks sent.
            self.queue(Job::Flush)?;
        }
        if stopping {
            self.slot.set_idle();
            return Ok(None);
        }
        // While a resumed file of this connection is being checked, the
        // client waits for its ack: that silence is ours, not the client's,
        // so the connection is neither idle (to be evicted) nor timed out.
        // It is looked at again every CHECK_POLL until the check is done.
        let mut idle = false;
        let available = loop {
            if self.reader.buffer().is_empty() {
                let wait = if self.checks.busy() {
                    CHECK_POLL
                } else {
                    if !idle {
                        self.slot.set_idle();
                        idle = true;
                    }
                    self.shared.limits.idle_timeout
                };
                self.stream.set_read_timeout(Some(wait))?;
            }
            match self.reader.fill_buf() {
                Ok(bytes) => break bytes.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if body::is_timeout(&e) && !idle => continue,
                Err(e) if body::is_timeout(&e) => {
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
            self.queue(Job::Flush)?;
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
            Err(FrameError::Io(e)) if body::is_timeout(&e) => {
                Err(SessionError::Timeout("inside a header frame"))
            }
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
