//! Ferry v1 sessions: a handshake, then files (with resume), folders and
//! plans, each answered on the wire.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferry_proto::path::{canonical, escape_for_display};
use ferry_proto::{
    ClientMsg, ErrorCode, FileHeader, MAX_FRAME_LEN, Outcome, PROTOCOL_VERSION, ProtoError,
    ServerMsg, to_body,
};
use tracing::{debug, info, warn};

use super::{Session, SessionError, folders_of};
use crate::body::{BodyError, Digest, Received};
use crate::commit::{self, Job, Pending, Receipt, ResumeCheck, Unwritten};
use crate::storage::{self, Finished, StoreError, Upload};

/// Most files one plan message may ask about: the answer must fit in a
/// frame, and stored-as names can be long.
const MAX_PLAN_FILES: usize = 256;

/// Files at most this big are received into memory and written out by the
/// committer, while the session holds few enough bytes (see
/// [`InMemory`](crate::commit::InMemory)).
const IN_MEMORY_MAX: u64 = 64 * 1024;

/// What the sender said after a file's body.
enum Trailer {
    /// Its digest.
    Done(String),
    /// That it gave up, and why.
    Aborted(String),
}

/// What the ack and the log line of a received v1 file are made from.
fn receipt(header: &FileHeader, started: Instant, digest: blake3::Hash) -> Receipt {
    Receipt {
        id: Some(header.id),
        path: header.path.clone(),
        size: header.size,
        took: started.elapsed(),
        digest,
    }
}

impl<'a> Session<'a> {
    /// Ferry v1: handshake, then acked files and folders.
    pub(super) fn v1(&mut self, version: u32, client: &str) -> Result<(), SessionError> {
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
                        message: "it takes no more files".into(),
                    });
                }
                self.queue(Job::Flush)?;
                return Ok(());
            };
            match ClientMsg::parse(&body) {
                Ok(ClientMsg::File(header)) => self.receive_v1(&header)?,
                Ok(ClientMsg::Mkdir { id, path }) => self.mkdir(id, &path)?,
                Ok(ClientMsg::Plan { files }) if files.len() <= MAX_PLAN_FILES => {
                    let answer = ServerMsg::Plan {
                        verdicts: self.shared.store.verdicts(&files),
                    };
                    // Long names repeated in the answer can make it bigger
                    // than the question.
                    if to_body(&answer).len() > MAX_FRAME_LEN {
                        return self.protocol_error(format!(
                            "the answer about these {} files would not fit in one frame: \
                             ask about fewer at a time",
                            files.len()
                        ));
                    }
                    self.send(answer)?;
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
        Err(self.protocol_failure(message))
    }

    /// Tells the client what it got wrong; returns why the session ends.
    fn protocol_failure(&mut self, message: String) -> SessionError {
        let told = self
            .send(ServerMsg::Error {
                code: ErrorCode::Protocol,
                message: message.clone(),
            })
            .and_then(|()| self.queue(Job::Flush));
        match told {
            Ok(()) => ProtoError::Unexpected(message).into(),
            Err(e) => e,
        }
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
        if let Err(limit) = self.count_file() {
            return self.refuse(header, limit);
        }
        if header.offset == 0
            && header.size <= IN_MEMORY_MAX
            && self.in_memory.has_room(header.size)
        {
            return self.receive_to_memory(header, started);
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
        match self.read_done(header)? {
            Trailer::Done(blake3) if !is_lowercase_hex_digest(&blake3) => {
                upload.discard();
                self.mismatch(header, &blake3, None)
            }
            Trailer::Done(blake3) => {
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
                        Err(_) => {
                            upload.discard();
                            return self.mismatch(header, &blake3, None);
                        }
                    },
                    Received::Known(digest) => {
                        upload.discard();
                        return self.mismatch(header, &blake3, Some(digest));
                    }
                };
                self.finish_metadata(&mut upload, header.mtime);
                self.queue(Job::File(Pending {
                    receipt: receipt(header, started, digest),
                    finished: Finished {
                        upload,
                        parts,
                        policy: header.on_clash,
                        digest,
                    },
                    check,
                }))
            }
            Trailer::Aborted(reason) => {
                upload.discard();
                self.aborted(header, &reason)
            }
        }
    }

    /// A small file: its body is read into memory, checked, and handed to
    /// the committer to write out (see [`Unwritten`]), so that this thread
    /// goes straight on to the next file.
    fn receive_to_memory(
        &mut self,
        header: &FileHeader,
        started: Instant,
    ) -> Result<(), SessionError> {
        let (parts, destination, reservation) = match self.announce(&header.path, header.size) {
            Ok(announced) => announced,
            Err(e) => return self.refuse(header, e),
        };
        debug!(peer = %self.peer, path = ?header.path, size = header.size, "receiving");
        let size = usize::try_from(header.size).unwrap_or(usize::MAX);
        let (body, digest) = match self.receive_body_to_memory(&header.path, size) {
            Ok(received) => received,
            Err(BodyError::Store(e)) => return self.refuse(header, e),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        match self.read_done(header)? {
            Trailer::Done(blake3) if blake3 == digest.to_hex().as_str() => {
                let job = Unwritten {
                    receipt: receipt(header, started, digest),
                    destination,
                    reservation,
                    parts,
                    policy: header.on_clash,
                    body: self.in_memory.hold(body),
                    mtime: header.mtime,
                };
                self.queue(Job::Unwritten(Box::new(job)))
            }
            Trailer::Done(blake3) => self.mismatch(header, &blake3, Some(digest)),
            Trailer::Aborted(reason) => self.aborted(header, &reason),
        }
    }

    /// Reads the trailer that must follow a file's body.
    fn read_done(&mut self, header: &FileHeader) -> Result<Trailer, SessionError> {
        let trailer = self
            .read_trailer(&header.path)?
            .ok_or_else(|| SessionError::NoTrailer(escape_for_display(&header.path)))?;
        match ClientMsg::parse(&trailer)? {
            ClientMsg::Done { id, blake3 } if id == header.id => Ok(Trailer::Done(blake3)),
            ClientMsg::Abort { id, reason } if id == header.id => Ok(Trailer::Aborted(reason)),
            other => {
                let got = match &other {
                    ClientMsg::Done { id, .. } | ClientMsg::Abort { id, .. } => {
                        format!("`{}` for file {id}", other.kind())
                    }
                    _ => format!("`{}`", other.kind()),
                };
                let message = format!("expected `done` for file {}, got {got}", header.id);
                Err(self.protocol_failure(message))
            }
        }
    }

    /// The sender gave up on a file after its body: nothing of it is kept.
    /// Its reason is echoed in the ack and the log, cut to a few lines: a
    /// frame's worth of reason would make an ack too big to send, and let
    /// a client make the server write as much as it sent.
    fn aborted(&mut self, header: &FileHeader, reason: &str) -> Result<(), SessionError> {
        let reason = clipped(reason, ABORT_REASON_MAX);
        info!(peer = %self.peer, name = ?&header.path,
            "sender aborted the file: {}", escape_for_display(&reason));
        self.ack_failed(
            header.id,
            ErrorCode::Aborted,
            format!("aborted by the sender: {reason}"),
        )
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
    /// is kept (the caller has discarded it, and any kept partial that led
    /// here), and the client is told; the connection goes on.
    fn mismatch(
        &mut self,
        header: &FileHeader,
        announced: &str,
        received: Option<blake3::Hash>,
    ) -> Result<(), SessionError> {
        let received = received.map_or_else(|| "(not checked)".to_string(), |d| d.to_string());
        warn!(peer = %self.peer, name = ?&header.path,
            "digest mismatch: received bytes hash to {received}, sender announced {}",
            escape_for_display(&clipped(announced, 128)));
        // A digest that cannot be one is the sender's bug, not a changed
        // file: say so, rather than blame the bytes.
        if !is_lowercase_hex_digest(announced) {
            return self.ack_failed(
                header.id,
                ErrorCode::DigestMismatch,
                "the digest sent is not 64 lowercase hex digits (BLAKE3); nothing was stored"
                    .into(),
            );
        }
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
}

/// Whether `digest` is written as PROTOCOL.md asks: a BLAKE3 in 64
/// lowercase hex digits.
fn is_lowercase_hex_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The longest abort reason echoed back, in bytes.
const ABORT_REASON_MAX: usize = 512;

/// `text` cut to at most `max` bytes, ellipsis included, at a character
/// boundary.
fn clipped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    const ELLIPSIS: &str = "...";
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::clipped;

    #[test]
    fn reasons_are_clipped_at_a_character_boundary() {
        assert_eq!(clipped("short", 10), "short");
        assert_eq!(clipped("exactly10!", 10), "exactly10!");
        assert_eq!(clipped("abcdefgh", 7), "abcd...");
        // 'é' is two bytes: a cut through it backs up before it.
        assert_eq!(clipped("aaééé", 6), "aa...");
        assert_eq!(clipped("aéééé", 6), "aé...");
    }
}
