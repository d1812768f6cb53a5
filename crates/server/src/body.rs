//! Receiving one file body: exactly `size` bytes from the socket into an
//! upload, hashed on the way (or, for a resumed upload, hashed from the file
//! by a [`TrailingHash`] that also covers the part kept from before).
//!
//! Small bodies are copied in one loop. A big body is the one place where a
//! session is CPU-bound (copy in from the socket, hash, copy out to the
//! file), so it gets a writer thread: this thread receives and hashes 1 MiB
//! chunks while the writer puts the previous ones into the file (around the
//! page cache where it can: see [`Upload::write_chunk`]). Only a few
//! uploads at a time get a writer (see [`WriterSlots`]): each holds a few
//! MiB of buffers, and more writers than cores would only take turns.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::thread;

use ferry_proto::path::escape_for_display;

use crate::Limits;
use crate::session::SessionError;
use crate::storage::{DIRECT_ALIGN, StoreError, Upload, aligned_start};
use crate::trailing_hash::TrailingHash;
use crate::transport::Incoming;

/// Bodies at least this big get a writer thread, when a slot is free.
const PARALLEL_MIN_BYTES: u64 = 8 << 20;
/// Size of the chunks handed to the writer, and how many may exist at once
/// per upload (one being received, the others queued or being written).
const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 3;

/// A body that did not arrive whole, either side's fault.
pub(crate) enum BodyError {
    /// Storing failed (a full disk, say): the client is not to blame.
    Store(StoreError),
    /// The client left, stalled or the socket failed.
    Wire(SessionError),
}

/// How many uploads may have a writer thread at once.
#[derive(Debug)]
pub struct WriterSlots(AtomicUsize);

impl WriterSlots {
    /// As many slots as cores (at least two).
    pub fn for_this_machine() -> Self {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        WriterSlots(AtomicUsize::new(cores.clamp(2, 8)))
    }

    fn take(&self) -> Option<SlotGuard<'_>> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| SlotGuard(self))
    }
}

struct SlotGuard<'a>(&'a WriterSlots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// How a body's bytes are hashed.
pub(crate) enum Digest {
    /// On the way in: the body is the whole file (a new upload).
    Incoming,
    /// From the file, after the part kept from an interrupted upload, by a
    /// thread of its own (a resumed upload).
    Trailing(TrailingHash),
}

/// A file's digest once its body is in.
pub(crate) enum Received {
    Known(blake3::Hash),
    /// Still being computed, from the file: whoever needs it waits with
    /// [`TrailingHash::finish`].
    Trailing(TrailingHash),
}

/// Receives `size` bytes into `upload`; the digest covers those bytes, or
/// the whole file for a resumed upload.
pub(crate) fn receive(
    reader: &mut BufReader<Incoming>,
    upload: &mut Upload<'_>,
    name: &str,
    size: u64,
    slots: &WriterSlots,
    digest: Digest,
    min_rate: MinRate,
) -> Result<Received, BodyError> {
    let mut pace = min_rate.start();
    match digest {
        // Hashing is already off this thread: no writer needed.
        Digest::Trailing(trailing) => {
            copy_inline(reader, name, size, &mut pace, |bytes| {
                upload.write_all(bytes).map_err(BodyError::Store)?;
                trailing.wrote(bytes.len());
                Ok(())
            })?;
            Ok(Received::Trailing(trailing))
        }
        Digest::Incoming => {
            let mut hasher = blake3::Hasher::new();
            match (size >= PARALLEL_MIN_BYTES).then(|| slots.take()).flatten() {
                Some(_slot) => receive_with_writer(reader, upload, name, size, hasher, &mut pace)
                    .map(Received::Known),
                None => {
                    copy_inline(reader, name, size, &mut pace, |bytes| {
                        upload.write_all(bytes).map_err(BodyError::Store)?;
                        hasher.update(bytes);
                        Ok(())
                    })?;
                    Ok(Received::Known(hasher.finalize()))
                }
            }
        }
    }
}

/// Receives a small body of `size` bytes into memory, and its digest; the
/// session hands such files to its committer to be written out.
pub(crate) fn receive_to_memory(
    reader: &mut BufReader<Incoming>,
    name: &str,
    size: usize,
    min_rate: MinRate,
) -> Result<(Vec<u8>, blake3::Hash), BodyError> {
    let mut pace = min_rate.start();
    let mut body = Vec::with_capacity(size);
    copy_inline(reader, name, size as u64, &mut pace, |bytes| {
        body.extend_from_slice(bytes);
        Ok(())
    })?;
    let digest = blake3::hash(&body);
    Ok((body, digest))
}

/// The slowest a body may arrive: at least `bytes_per_sec` on average over
/// each stretch of `window`. A peer trickling just inside the silence
/// timeout would otherwise hold its connection, busy and so never evicted,
/// for as long as it likes.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub window: std::time::Duration,
}

impl MinRate {
    /// The rule the server's limits set, for bodies and answers alike.
    pub(crate) fn of(limits: &Limits) -> MinRate {
        MinRate {
            bytes_per_sec: limits.min_rate,
            window: limits.body_timeout,
        }
    }

    fn start(self) -> Pace {
        Pace {
            rule: self,
            since: std::time::Instant::now(),
            got: 0,
        }
    }
}

/// Progress against a [`MinRate`].
struct Pace {
    rule: MinRate,
    since: std::time::Instant,
    got: u64,
}

impl Pace {
    fn note(&mut self, n: usize) -> Result<(), SessionError> {
        self.got += n as u64;
        let elapsed = self.since.elapsed();
        if elapsed < self.rule.window {
            return Ok(());
        }
        let due = (self.rule.bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
        if self.got < due {
            return Err(SessionError::Timeout(
                "sending slower than the minimum rate",
            ));
        }
        self.since = std::time::Instant::now();
        self.got = 0;
        Ok(())
    }
}

/// Reads `size` bytes on this thread, handing each piece to `sink` as it
/// comes out of the socket buffer.
fn copy_inline(
    reader: &mut BufReader<Incoming>,
    name: &str,
    size: u64,
    pace: &mut Pace,
    mut sink: impl FnMut(&[u8]) -> Result<(), BodyError>,
) -> Result<(), BodyError> {
    let mut left = size;
    while left > 0 {
        let cut = |cause| cut_short(name, size - left, size, cause);
        let chunk = match reader.fill_buf() {
            Ok([]) => return Err(cut(SessionError::PeerLeft)),
            Ok(c) => c,
            Err(e) => match wire_error(e) {
                Some(cause) => return Err(cut(cause)),
                None => continue,
            },
        };
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink(&chunk[..n])?;
        reader.consume(n);
        left -= n as u64;
        pace.note(n)
            .map_err(|cause| cut_short(name, size - left, size, cause))?;
    }
    Ok(())
}

fn receive_with_writer(
    reader: &mut BufReader<Incoming>,
    upload: &mut Upload<'_>,
    name: &str,
    size: u64,
    mut hasher: blake3::Hasher,
    pace: &mut Pace,
) -> Result<blake3::Hash, BodyError> {
    let (full, to_write) = sync_channel::<(Chunk, usize)>(CHUNKS);
    let (give_back, spare) = channel::<Chunk>();
    thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<(), StoreError> {
            for (chunk, len) in to_write {
                upload.write_chunk(&chunk.bytes()[..len])?;
                // The receiver may have stopped waiting for spares.
                let _ = give_back.send(chunk);
            }
            Ok(())
        });

        let mut left = size;
        let mut allocated = 0;
        let received = loop {
            if left == 0 {
                break Ok(());
            }
            let mut chunk = match spare.try_recv() {
                Ok(c) => c,
                Err(_) if allocated < CHUNKS => {
                    allocated += 1;
                    Chunk::new()
                }
                // Every chunk is queued or being written: wait for one. If
                // the writer has stopped, its error is reported below.
                Err(_) => match spare.recv() {
                    Ok(c) => c,
                    Err(_) => break Ok(()),
                },
            };
            let want = CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX));
            let mut filled = 0;
            let cut =
                |filled: usize, cause| cut_short(name, size - left + filled as u64, size, cause);
            while filled < want {
                match reader.read(&mut chunk.bytes_mut()[filled..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        filled += n;
                        pace.note(n).map_err(|cause| cut(filled, cause))?;
                    }
                    Err(e) => match wire_error(e) {
                        Some(cause) => return Err(cut(filled, cause)),
                        None => continue,
                    },
                }
            }
            if filled == 0 {
                break Err(cut(0, SessionError::PeerLeft));
            }
            hasher.update(&chunk.bytes()[..filled]);
            left -= filled as u64;
            if full.send((chunk, filled)).is_err() {
                // The writer stopped early; its error is reported below.
                break Ok(());
            }
        };
        drop(full);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(StoreError::Io(io::Error::other("writer thread panicked"))));
        // A storage failure explains everything that followed it.
        written.map_err(BodyError::Store)?;
        received?;
        Ok(hasher.finalize())
    })
}

/// A [`CHUNK`] of memory that starts on a [`DIRECT_ALIGN`] boundary, so
/// that the writer can hand it to the file around the page cache (see
/// [`Upload::write_chunk`]). Over-allocated and sliced, rather than
/// allocated with a custom alignment, to stay in safe code.
struct Chunk {
    buffer: Vec<u8>,
    start: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let buffer = vec![0u8; CHUNK + DIRECT_ALIGN];
        let start = aligned_start(&buffer);
        Chunk { buffer, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..self.start + CHUNK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + CHUNK]
    }
}

/// A body cut short by `cause`, `got` bytes in.
fn cut_short(name: &str, got: u64, expected: u64, cause: SessionError) -> BodyError {
    BodyError::Wire(SessionError::BodyCut {
        name: escape_for_display(name),
        got,
        expected,
        cause: Box::new(cause),
    })
}

/// Socket read timeouts surface as `WouldBlock` on Unix.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Classifies a read error: `None` means try again.
fn wire_error(e: io::Error) -> Option<SessionError> {
    if e.kind() == io::ErrorKind::Interrupted {
        None
    } else if is_timeout(&e) {
        Some(SessionError::Timeout("waiting for body bytes"))
    } else {
        Some(e.into())
    }
}
