//! Hashing a resumed upload from its first byte while the rest of it is
//! still arriving.
//!
//! A resumed file's digest covers the whole file, so the part kept from the
//! interrupted upload has to be read back and hashed. Done before the body
//! is read, that stalls the socket for as long as the disk takes to read
//! the kept part: tens of GiB take longer than a sender waits for its
//! writes to move. Instead a thread reads the file from the start, a step
//! behind the writer, and hashes it; the session only reads the socket and
//! writes. The committer, which checks the digest before committing, waits
//! for the thread to reach the last byte, so the session keeps reading the
//! files that follow meanwhile.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How much the hashing thread reads at a time.
const READ_SIZE: usize = 256 * 1024;
/// How often [`TrailingHash::finish`] looks at its give-up flag.
const GIVE_UP_POLL: Duration = Duration::from_millis(100);

/// A BLAKE3 hash of a file, computed on its own thread from the file's
/// start up to the bytes written so far.
#[derive(Debug)]
pub struct TrailingHash {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer tells the hashing thread.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<State>,
    changed: Condvar,
    /// Set by the thread when it is done, successfully or not.
    outcome: Mutex<Option<Outcome>>,
    ended: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    /// Bytes of the file written so far, from its start.
    written: u64,
    /// No more bytes will come.
    closed: bool,
    /// The result is no longer wanted: stop as soon as possible.
    abandoned: bool,
}

/// What the hashing thread hands back, once.
type Outcome = io::Result<blake3::Hasher>;

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain numbers: still sound after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

impl TrailingHash {
    /// Starts hashing `file`, of which the first `written` bytes are there
    /// already. `file` may be a second handle on the file being written:
    /// the thread reads at explicit offsets and never moves its position.
    pub fn start(file: File, written: u64) -> io::Result<TrailingHash> {
        let progress = Arc::new(Progress::default());
        progress.lock().written = written;
        let shared = Arc::clone(&progress);
        let thread = thread::Builder::new()
            .name("ferry-rehash".into())
            .spawn(move || {
                let outcome = hash_behind(&file, &shared);
                *shared.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                shared.ended.notify_all();
            })?;
        Ok(TrailingHash {
            progress,
            thread: Some(thread),
        })
    }

    /// Says that `n` more bytes are now in the file, after those before.
    pub fn wrote(&self, n: usize) {
        self.progress.update(|s| s.written += n as u64);
    }

    /// Waits for every written byte to be hashed and returns the digest,
    /// unless `give_up` is raised first (the server is dropping unfinished
    /// uploads): then the wait ends with an `Interrupted` error.
    pub fn finish(self, give_up: &AtomicBool) -> io::Result<blake3::Hash> {
        self.progress.update(|s| s.closed = true);
        let mut outcome = self
            .progress
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = outcome.take() {
                return result.map(|hasher| hasher.finalize());
            }
            if give_up.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the server stopped before the resumed file was checked",
                ));
            }
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                // Ended without leaving an outcome: it panicked.
                return Err(io::Error::other("the thread hashing the file panicked"));
            }
            outcome = self
                .progress
                .ended
                .wait_timeout(outcome, GIVE_UP_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for TrailingHash {
    /// An upload given up on: the thread stops at its next read.
    fn drop(&mut self) {
        self.progress.update(|s| s.abandoned = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The hashing thread: reads and hashes whatever has been written, waits
/// for more, and returns once the writer is done and everything is hashed.
fn hash_behind(file: &File, progress: &Progress) -> Outcome {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut at = 0u64;
    loop {
        let state = {
            let mut state = progress.lock();
            while !state.abandoned && !state.closed && state.written <= at {
                state = progress
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            *state
        };
        if state.abandoned {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the upload was given up",
            ));
        }
        while at < state.written {
            if progress.lock().abandoned {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the upload was given up",
                ));
            }
            let want = buf
                .len()
                .min(usize::try_from(state.written - at).unwrap_or(usize::MAX));
            match file.read_at(&mut buf[..want], at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file being resumed is shorter than what was written to it",
                    ));
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if state.closed {
            return Ok(hasher);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A give-up flag never raised.
    static NO: AtomicBool = AtomicBool::new(false);

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn hashes_the_kept_part_and_what_is_written_after_it() {
        let all = bytes(3 * READ_SIZE + 1234);
        let kept = READ_SIZE + 77;
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&all[..kept]).expect("kept part");
        let hash = TrailingHash::start(file.try_clone().expect("dup"), kept as u64).expect("start");
        // The rest arrives in uneven pieces while the thread hashes.
        for piece in all[kept..].chunks(100_003) {
            file.write_all(piece).expect("write");
            hash.wrote(piece.len());
        }
        assert_eq!(hash.finish(&NO).expect("digest"), blake3::hash(&all));
    }

    #[test]
    fn nothing_written_after_the_kept_part_is_fine() {
        let all = bytes(5000);
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&all).expect("write");
        let hash = TrailingHash::start(file, all.len() as u64).expect("start");
        assert_eq!(hash.finish(&NO).expect("digest"), blake3::hash(&all));
    }

    #[test]
    fn a_file_shorter_than_announced_is_an_error_not_a_hang() {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&bytes(100)).expect("write");
        let hash = TrailingHash::start(file, 100).expect("start");
        hash.wrote(50); // claimed, never written
        let err = hash.finish(&NO).expect_err("short file");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn dropping_it_stops_the_thread() {
        let file = tempfile::tempfile().expect("tempfile");
        let hash = TrailingHash::start(file, 0).expect("start");
        // Waiting for bytes that never come; drop must not hang.
        drop(hash);
        // In the middle of reading a big file, too.
        let mut file = tempfile::tempfile().expect("tempfile");
        let big = bytes(64 << 20);
        file.write_all(&big).expect("write");
        let hash = TrailingHash::start(file, big.len() as u64).expect("start");
        drop(hash);
    }

    #[test]
    fn finish_gives_up_when_asked_instead_of_waiting_for_the_hash() {
        // 64 GiB of holes: seconds of hashing at the very least.
        let file = tempfile::tempfile().expect("tempfile");
        file.set_len(64 << 30).expect("sparse file");
        let hash = TrailingHash::start(file, 64 << 30).expect("start");
        let give_up = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| hash.finish(&give_up));
            std::thread::sleep(Duration::from_millis(150));
            give_up.store(true, Ordering::SeqCst);
            let err = waiter.join().expect("join").expect_err("gave up");
            assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        });
    }
}
