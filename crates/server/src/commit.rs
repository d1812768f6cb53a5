//! The committer: a session's second thread.
//!
//! The session thread reads frames, receives bodies (into nameless files,
//! or into memory for small ones) and checks digests; the committer makes
//! the finished files durable and visible, in the order they arrived, and
//! writes every message the client is sent. Splitting the work lets the next files arrive while earlier ones
//! are linked and synced, on the other core, and with one thread owning the
//! socket's write side, acks and other messages can never cross.
//!
//! Small files come to the committer still in memory ([`Unwritten`]) and it
//! writes them out too: creating a file is most of what a small file costs,
//! and left on the session thread it made that thread the one limit on a
//! stream of them while the committer sat mostly idle.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ferry_proto::path::escape_for_display;
use ferry_proto::{Ack, ErrorCode, Mtime, OnClash, Outcome, ServerMsg, to_body, write_frame};
use tracing::{info, warn};

use crate::Shared;
use crate::answer_pace::Paced;
use crate::session::SessionError;
use crate::storage::{
    Destination, Finished, Reservation, Store, StoreError, Stored, SyncHandle, Upload,
};
use crate::trailing_hash::TrailingHash;
use crate::transport::Outgoing;

/// A file at least this big is committed on its own (after the files
/// before it), with an fsync of the file and its folder; smaller ones are
/// committed as a group (see [`Store::sync`]).
const SOLO_COMMIT_BYTES: u64 = 1 << 20;
/// A group is committed when it has this many files (each holds an open
/// file until then)...
const GROUP_MAX_FILES: usize = 512;
/// ...or when its oldest file has waited this long, so acks keep flowing
/// while a client streams many small files.
const GROUP_MAX_AGE: Duration = Duration::from_millis(200);

/// A received, verified file waiting for its commit.
pub(crate) struct Pending<'s> {
    pub receipt: Receipt,
    pub finished: Finished<'s>,
    /// For a resumed file, its hash, still being made from the file: it
    /// must come out as `receipt.digest` (the sender's) before the file is
    /// committed.
    pub check: Option<Box<ResumeCheck<'s>>>,
}

/// A resumed file's hash in the making, counted in its connection's
/// [`Checks`] until the committer is done with it.
pub(crate) struct ResumeCheck<'c> {
    pub hash: TrailingHash,
    pub counted: CheckTicket<'c>,
}

/// How many resumed files of a connection are still being checked. While
/// one is, the client is waiting for its ack rather than idle, and the
/// session starts no other resume (each check is a thread and a file).
#[derive(Debug, Default)]
pub(crate) struct Checks(AtomicUsize);

impl Checks {
    pub fn ticket(&self) -> CheckTicket<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        CheckTicket(self)
    }

    pub fn busy(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// One check counted in [`Checks`], until dropped.
pub(crate) struct CheckTicket<'c>(&'c Checks);

impl Drop for CheckTicket<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pending<'_> {
    /// A big file, or one on a file system the group's sync does not cover
    /// (mounted inside the target), is committed on its own with fsyncs; so
    /// is a resumed one, which may first wait for its hash.
    fn commits_alone(&self) -> bool {
        self.receipt.size >= SOLO_COMMIT_BYTES
            || self.finished.upload.beyond_root()
            || self.check.is_some()
    }
}

/// What the client is told when a file does not hash to what its sender
/// announced; `resumed` when the bytes kept from an earlier try are part
/// of it (they may be what differs).
pub(crate) fn mismatch_outcome(resumed: bool) -> (ErrorCode, &'static str) {
    if resumed {
        (
            ErrorCode::ResumeMismatch,
            "the file resumed from the kept partial does not match; send it all again",
        )
    } else {
        (
            ErrorCode::DigestMismatch,
            "the bytes received do not match the digest sent; nothing was stored",
        )
    }
}

/// What the ack and the log line of a file say, whatever its commit does.
pub(crate) struct Receipt {
    /// The v1 id to ack; `None` for a tutorial client, which gets no ack.
    pub id: Option<u64>,
    pub path: String,
    pub size: u64,
    /// How long it took to arrive, for the log.
    pub took: Duration,
    pub digest: blake3::Hash,
}

/// A small file received whole and verified, its bytes still in memory:
/// the committer writes it out before committing it. That takes opening,
/// writing and closing a file off the session thread, which is the one
/// that keeps a stream of small files moving.
pub(crate) struct Unwritten<'s> {
    pub receipt: Receipt,
    pub destination: Destination,
    /// The space and quota it was given when announced.
    pub reservation: Reservation<'s>,
    pub parts: Vec<String>,
    pub policy: OnClash,
    pub body: Held<'s>,
    pub mtime: Option<Mtime>,
}

/// Bytes of [`Unwritten`] files a session holds in memory. Past
/// [`InMemory::LIMIT`] the session thread writes files itself: memory stays
/// bounded however far the committer lags (it may be waiting for a sync),
/// and the two threads share the work by how busy each is.
#[derive(Debug, Default)]
pub(crate) struct InMemory(AtomicUsize);

impl InMemory {
    /// At most this much per session: 72 sessions of small files then hold
    /// 18 MiB at most. (10,000 files of 4 KiB went as fast with 256 KiB as
    /// with 1 or 4 MiB.)
    pub const LIMIT: usize = 256 * 1024;

    /// Whether a body of `len` bytes fits under the limit. Only the
    /// session thread adds, so room found stays there until it does.
    pub fn has_room(&self, len: u64) -> bool {
        let held = self.0.load(Ordering::Acquire) as u64;
        held.saturating_add(len) <= Self::LIMIT as u64
    }

    /// Counts `body` as held until the returned [`Held`] is dropped.
    pub fn hold(&self, body: Vec<u8>) -> Held<'_> {
        self.0.fetch_add(body.len(), Ordering::AcqRel);
        Held { body, count: self }
    }
}

/// A body counted in [`InMemory`] until dropped.
pub(crate) struct Held<'c> {
    body: Vec<u8>,
    count: &'c InMemory,
}

impl Held<'_> {
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.count.0.fetch_sub(self.body.len(), Ordering::AcqRel);
    }
}

/// What the session thread asks of the committer, in order.
pub(crate) enum Job<'s> {
    /// Commit this file (soon), then ack it.
    File(Pending<'s>),
    /// Write this file out, then do as for `File`.
    Unwritten(Box<Unwritten<'s>>),
    /// Write this message once everything queued before it is done.
    Send(ServerMsg),
    /// The session thread is about to wait for the client: commit what is
    /// queued and get every ack onto the wire.
    Flush,
}

/// Runs until the session thread hangs up, then commits what is left.
/// `failed` is raised as soon as a file cannot be stored, so the session
/// thread ends the connection (the protocol closes after a refusal).
pub(crate) fn run(
    jobs: Receiver<Vec<Job<'_>>>,
    writer: BufWriter<Paced<Outgoing>>,
    shared: &Shared,
    peer: SocketAddr,
    failed: &AtomicBool,
) -> Result<(), SessionError> {
    let mut committer = Committer {
        sync_via: shared.store.sync_handle(),
        writer,
        writable: true,
        shared,
        store: &shared.store,
        peer,
        pending: Vec::new(),
        linked: Vec::new(),
        group_since: Instant::now(),
        linked_since: Instant::now(),
        failure: None,
        failed,
    };
    loop {
        // Files must not wait for a commit only because the next file is
        // slow to come (a client trickling a body, say): they hold open
        // files, and their acks wait too.
        let batch = match committer.due() {
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => jobs.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => {
                committer.settle();
                committer.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for job in batch {
            match job {
                Job::File(file) => committer.hold(file),
                Job::Unwritten(file) => committer.write_out(*file),
                Job::Send(msg) => {
                    committer.settle();
                    // After a file could not be stored, the files sent after
                    // it get no answer (the client sends them again).
                    let answers = matches!(msg, ServerMsg::Ack(_) | ServerMsg::Plan { .. });
                    if committer.failure.is_none() || !answers {
                        committer.write(&msg);
                    }
                }
                Job::Flush => {
                    committer.settle();
                    committer.flush();
                }
            }
        }
    }
    committer.settle();
    committer.flush();
    committer.writer.get_mut().get_mut().finish();
    committer.failure.map_or(Ok(()), Err)
}

struct Committer<'s, 'f> {
    /// This session's own handle to sync through.
    sync_via: SyncHandle,
    writer: BufWriter<Paced<Outgoing>>,
    /// Cleared once a write fails: the client is gone, but files already
    /// received are still committed.
    writable: bool,
    shared: &'s Shared,
    store: &'s Store,
    peer: SocketAddr,
    /// Received files whose bytes are not known durable yet.
    pending: Vec<Pending<'s>>,
    /// Files linked into place whose names wait for the next sync before
    /// they are acked.
    linked: Vec<(Receipt, Result<Stored, StoreError>)>,
    /// When the oldest file in `pending` arrived.
    group_since: Instant,
    /// When `linked` was filled.
    linked_since: Instant,
    failure: Option<SessionError>,
    failed: &'f AtomicBool,
}

impl<'s> Committer<'s, '_> {
    /// Queues a file, committing the queue when it is full, old, or holds a
    /// big file. After a failure nothing more is stored: the session is
    /// ending, and the client resends what was not acked.
    fn hold(&mut self, mut file: Pending<'s>) {
        if self.failure.is_some() {
            return;
        }
        // Counted as being checked until committed and answered.
        let mut _checking = None;
        if let Some(check) = file.check.take() {
            let ResumeCheck { hash, counted } = *check;
            _checking = Some(counted);
            match self.verify(file, hash) {
                Some(verified) => file = verified,
                None => return,
            }
        }
        // Committed on its own, after the files before it.
        let alone = file.commits_alone();
        if alone && !self.pending.is_empty() {
            self.advance();
        }
        if self.pending.is_empty() {
            self.group_since = Instant::now();
        }
        self.pending.push(file);
        let old = self.group_since.elapsed() >= GROUP_MAX_AGE;
        // Each waiting file is open: a quarter of this session's share
        // (see `Session::make_room`).
        let room = GROUP_MAX_FILES.min(self.shared.open_files_per_session() / 4);
        if alone || old || self.pending.len() >= room.max(1) {
            self.advance();
        }
    }

    /// Writes a file received into memory out to a nameless file, and
    /// queues it like one the session wrote.
    fn write_out(&mut self, file: Unwritten<'s>) {
        if self.failure.is_some() {
            return;
        }
        let Unwritten {
            receipt,
            destination,
            reservation,
            parts,
            policy,
            body,
            mtime,
        } = file;
        let written = self
            .store
            .open_upload(&destination, &parts, reservation)
            .and_then(|mut upload| {
                upload.write_all(body.bytes())?;
                Ok(upload)
            });
        match written {
            Ok(mut upload) => {
                finish_metadata(&mut upload, self.shared.file_mode, mtime, self.peer);
                let digest = receipt.digest;
                self.hold(Pending {
                    receipt,
                    finished: Finished {
                        upload,
                        parts,
                        policy,
                        digest,
                    },
                    check: None,
                });
            }
            // Ends the session, as a refusal at header time would, and
            // likewise after the files before it are committed and acked.
            Err(reason) => {
                self.settle();
                self.answer(receipt, Err(reason));
            }
        }
    }

    /// Waits for a resumed file's hash and compares it with the sender's
    /// digest: the file back if it is to be committed, `None` if not (it
    /// has been answered). Everything before it is committed and acked
    /// first, and the acks sent: the wait may be long.
    fn verify(&mut self, file: Pending<'s>, hash: TrailingHash) -> Option<Pending<'s>> {
        self.settle();
        self.flush();
        if self.failure.is_some() {
            return None;
        }
        match hash.finish(&self.shared.dropping) {
            Ok(digest) if digest == file.finished.digest => Some(file),
            Ok(digest) => {
                warn!(peer = %self.peer, name = %escape_for_display(&file.receipt.path),
                    "digest mismatch: the resumed file hashes to {digest}, sender announced {}",
                    file.finished.digest);
                // The kept partial that led here goes too.
                file.finished.upload.discard();
                let (code, message) = mismatch_outcome(true);
                self.refuse_quietly(&file.receipt, code, message);
                self.flush();
                None
            }
            // Not checked, not stored; the kept partial stays.
            Err(e) => {
                self.answer(file.receipt, Err(StoreError::Io(e)));
                None
            }
        }
    }

    /// Moves the queue on by one sync: it makes the pending files' bytes and
    /// the last group's names durable, so the last group is acked and the
    /// pending files are linked, to be acked after the next sync. Sharing
    /// one sync between two groups halves the syncs a stream of small files
    /// costs. A big file, or one on another file system than the target's,
    /// comes alone and is committed with its own fsyncs instead.
    fn advance(&mut self) {
        // One write for the log lines of a whole group.
        let _lines = crate::log::hold_lines();
        let mut group = std::mem::take(&mut self.pending);
        if group.len() == 1 && group[0].commits_alone() {
            if let Some(Pending {
                receipt, finished, ..
            }) = group.pop()
            {
                self.ack_linked();
                if self.failure.is_some() {
                    // As below: nothing more is stored.
                    return;
                }
                let parts: Vec<&str> = finished.parts.iter().map(String::as_str).collect();
                let result = finished
                    .upload
                    .commit(&parts, finished.policy, &finished.digest);
                self.answer(receipt, result);
            }
            return;
        }
        if group.is_empty() && self.linked.is_empty() {
            return;
        }
        let synced = self.sync();
        self.answer_linked(&synced);
        if self.failure.is_some() {
            // The last group held a refusal: the session is ending, and
            // nothing more is stored (see `hold`). These files vanish
            // unnamed and unacked; the client sends them again.
            return;
        }
        // Files with a `check` always come alone (see `commits_alone`).
        let (receipts, finished): (Vec<Receipt>, Vec<Finished<'s>>) =
            group.into_iter().map(|p| (p.receipt, p.finished)).unzip();
        match synced {
            Ok(()) => {
                let results = self.store.link_group(finished);
                self.linked = receipts.into_iter().zip(results).collect();
                self.linked_since = Instant::now();
            }
            // Their bytes may not be on disk: they are not linked at all.
            Err(e) => {
                for receipt in receipts {
                    self.answer(receipt, Err(copy_error(&e)));
                }
            }
        }
    }

    /// When files must be committed (or linked ones acked) even if no job
    /// comes: none waits more than [`GROUP_MAX_AGE`] for either.
    fn due(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            Some(self.group_since + GROUP_MAX_AGE)
        } else if !self.linked.is_empty() {
            Some(self.linked_since + GROUP_MAX_AGE)
        } else {
            None
        }
    }

    /// Commits and acks everything: the client waits for acks, or the
    /// session is ending.
    fn settle(&mut self) {
        let _lines = crate::log::hold_lines();
        self.advance();
        self.ack_linked();
    }

    /// Syncs, then acks the linked files.
    fn ack_linked(&mut self) {
        if !self.linked.is_empty() {
            let synced = self.sync();
            self.answer_linked(&synced);
        }
    }

    /// Acks the linked files once a sync has (or has not) made their names
    /// durable.
    fn answer_linked(&mut self, synced: &Result<(), StoreError>) {
        for (receipt, result) in std::mem::take(&mut self.linked) {
            let result = match synced {
                Ok(()) => result,
                Err(e) => result.and(Err(copy_error(e))),
            };
            self.answer(receipt, result);
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.store.sync(&self.sync_via).map_err(|e| {
            warn!(peer = %self.peer, "sync failed: {e}");
            StoreError::from_io(e)
        })
    }

    /// Logs a file's commit and acks it.
    fn answer(&mut self, receipt: Receipt, result: Result<Stored, StoreError>) {
        let Receipt {
            id,
            path,
            size,
            took,
            digest,
        } = receipt;
        let outcome = match result {
            Ok(stored) => {
                self.log_stored(&stored.stored_as, size, took, id.is_some());
                Outcome::Stored {
                    stored_as: stored.stored_as,
                    bytes: size,
                    blake3: digest.to_hex().to_string(),
                    clash: stored.clash,
                }
            }
            Err(reason) => {
                if self.failure.is_some() {
                    // The first failure is logged when the session ends.
                    warn!(peer = %self.peer, name = %escape_for_display(&path), "commit failed: {reason}");
                }
                let outcome = Outcome::Failed {
                    code: reason.code(),
                    message: reason.to_string(),
                };
                self.failed.store(true, Ordering::SeqCst);
                self.failure.get_or_insert(SessionError::Refused {
                    name: escape_for_display(&path),
                    reason,
                });
                outcome
            }
        };
        let failed = matches!(outcome, Outcome::Failed { .. });
        if let Some(id) = id {
            self.write(&ServerMsg::Ack(Ack { id, outcome }));
        }
        if failed {
            // The session is ending: the client should know why now, not
            // once the session thread next waits for it.
            self.flush();
        }
    }

    /// Acks a file as not stored for a reason that ends nothing: the
    /// connection goes on.
    fn refuse_quietly(&mut self, receipt: &Receipt, code: ErrorCode, message: &str) {
        if let Some(id) = receipt.id {
            let outcome = Outcome::Failed {
                code,
                message: message.to_string(),
            };
            self.write(&ServerMsg::Ack(Ack { id, outcome }));
        }
    }

    fn write(&mut self, msg: &ServerMsg) {
        if !self.writable {
            return;
        }
        if let Err(e) = write_frame(&mut self.writer, &to_body(msg)) {
            self.lost_reader(&e.to_string());
        }
    }

    fn flush(&mut self) {
        if !self.writable {
            return;
        }
        if let Err(e) = self.writer.flush() {
            self.lost_reader(&e.to_string());
        }
    }

    /// The client no longer takes acks (gone, or stalled past the write
    /// timeout). Files it sent after this would be stored but never
    /// confirmed, and sent again: the session ends instead, and why is
    /// logged here, once.
    fn lost_reader(&mut self, why: &str) {
        warn!(peer = %self.peer, "cannot write to the client: {why}");
        self.writable = false;
        self.failed.store(true, Ordering::SeqCst);
        let _ = self
            .writer
            .get_ref()
            .get_ref()
            .socket()
            .shutdown(std::net::Shutdown::Both);
    }

    fn log_stored(&self, stored_as: &str, bytes: u64, took: Duration, v1: bool) {
        let secs = took.as_secs_f64();
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        info!(
            peer = %self.peer,
            name = ?stored_as,
            bytes,
            secs = format_args!("{secs:.3}"),
            rate = %format_args!("{}/s", humansize::format_size(rate as u64, humansize::BINARY)),
            dialect = if v1 { "v1" } else { "legacy" },
            "stored"
        );
    }
}

/// Applies the server's permission bits and the sender's modification
/// time. A file that cannot get its time is still stored.
pub(crate) fn finish_metadata(
    upload: &mut Upload<'_>,
    file_mode: u32,
    mtime: Option<Mtime>,
    peer: SocketAddr,
) {
    if let Err(e) = upload.set_mode(file_mode) {
        warn!(%peer, "cannot set a stored file's mode: {e}");
    }
    if let Some(m) = mtime
        && let Err(e) = upload.set_mtime(m.secs, m.nanos)
    {
        warn!(%peer, "cannot set a stored file's time: {e}");
    }
}

/// The same failure, for each file it fails.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NoSpace { needed, available } => StoreError::NoSpace {
            needed: *needed,
            available: *available,
        },
        other => StoreError::Io(io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::InMemory;

    #[test]
    fn bodies_held_in_memory_are_bounded_and_counted_until_dropped() {
        let count = InMemory::default();
        assert!(count.has_room(InMemory::LIMIT as u64));
        assert!(!count.has_room(InMemory::LIMIT as u64 + 1));
        let first = count.hold(vec![1; InMemory::LIMIT - 10]);
        assert!(count.has_room(10));
        assert!(!count.has_room(11));
        assert_eq!(first.bytes().len(), InMemory::LIMIT - 10);
        drop(first);
        assert!(count.has_room(InMemory::LIMIT as u64));
    }
}
