//! The private staging folder: what a crash left there is cleaned at
//! start-up, and partials of interrupted uploads are kept there, under
//! names derived from their path and the sender's key, for resuming, until
//! they expire.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_proto::path as names;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::folders::{Folder, FolderCache, Place};
use super::upload::{Direct, Temp, Upload};
use super::{PARTIAL_PREFIX, STAGING_DIR, Store, StoreError};
use crate::trailing_hash::TrailingHash;

/// How many times (10 ms apart) a resume tries for its partial's lock
/// before taking it as held by another upload.
const PARTIAL_LOCK_TRIES: u32 = 50;

impl Store {
    /// Removes the temporary files in the staging folder, and partials of
    /// interrupted uploads last written longer ago than the partial TTL.
    /// Called at start-up and at shutdown, when no upload can be using them.
    pub fn clean_staging(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.path.join(STAGING_DIR))? {
            let entry = entry?;
            let is_partial = entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX);
            if is_partial {
                let st = rustix::fs::statat(
                    &self.staging,
                    entry.file_name().as_os_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
                if st.is_ok_and(|st| self.idle_for(&st) < self.partial_ttl) {
                    continue;
                }
            }
            if rustix::fs::unlinkat(
                &self.staging,
                entry.file_name().as_os_str(),
                AtFlags::empty(),
            )
            .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes partials last written longer ago than the partial TTL while
    /// the server runs, and gives their room back. A partial an upload is
    /// writing is locked by it and left alone; one taken up meanwhile by a
    /// resume is told apart by `begin_resumable`, which finds its name gone.
    /// Returns how many were removed.
    pub fn expire_partials(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.path.join(STAGING_DIR)) else {
            return 0;
        };
        entries
            .map_while(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX))
            .filter(|e| self.expire(&e.file_name().to_string_lossy()))
            .count()
    }

    /// Removes partial `name` if it is unused and older than the TTL.
    fn expire(&self, name: &str) -> bool {
        // Young partials are passed over before being opened, so that the
        // sweep's lock never stands in the way of a resume.
        let old = |st: &rustix::fs::Stat| self.idle_for(st) >= self.partial_ttl;
        match rustix::fs::statat(&self.staging, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if old(&st) => {}
            _ => return false,
        }
        self.remove_partial(name, old).is_some()
    }

    /// How long ago a partial was last written to. Its status-change time,
    /// not its modification time: the latter is the sender's, set on the
    /// file before it is committed, and may lie far in the past or future.
    fn idle_for(&self, st: &rustix::fs::Stat) -> Duration {
        let changed = Duration::new(
            u64::try_from(st.st_ctime).unwrap_or(0),
            u32::try_from(st.st_ctime_nsec).unwrap_or(0),
        );
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Duration::ZERO, |now| now.saturating_sub(changed))
    }

    /// Removes partial `name` if no upload holds it and `wanted` says so of
    /// what is there, and gives its room back. Returns the bytes it held.
    fn remove_partial(
        &self,
        name: &str,
        wanted: impl Fn(&rustix::fs::Stat) -> bool,
    ) -> Option<u64> {
        let fd = rustix::fs::openat(
            &self.staging,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
        // Looked at again under the lock: no upload can be writing it now,
        // and the name must still be this file's.
        let ours = rustix::fs::fstat(&fd).ok()?;
        let same = rustix::fs::statat(&self.staging, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|now| now.st_ino == ours.st_ino && now.st_dev == ours.st_dev);
        if !same || !wanted(&ours) {
            return None;
        }
        rustix::fs::unlinkat(&self.staging, name, AtFlags::empty()).ok()?;
        let bytes = ours.st_size as u64;
        self.give_back(bytes);
        Some(bytes)
    }

    /// How long partials are kept (see [`Store::expire_partials`]).
    pub fn partial_ttl(&self) -> Duration {
        self.partial_ttl
    }

    /// Starts or resumes an upload kept under a name in the staging folder,
    /// so that what arrives survives a dropped connection or a server
    /// restart. `offset` is where the sender starts; the partial must hold
    /// at least that much. Returns the upload positioned at `offset` and,
    /// when something was kept, the hash of the whole file in the making
    /// (see [`TrailingHash`]), so the final digest covers the kept bytes
    /// too and a tampered partial is caught.
    pub fn begin_resumable(
        &self,
        parts: &[&str],
        folders_seen: &mut FolderCache,
        key: &str,
        size: u64,
        offset: u64,
    ) -> Result<(Upload<'_>, Option<TrailingHash>), StoreError> {
        // The whole file, not just what is left of it: resuming a partial
        // under a bigger size each time must not grow it past the limit.
        self.check_limit(size)?;
        let (_, folders) = parts
            .split_last()
            .ok_or_else(|| StoreError::BadName("empty".into()))?;
        let Folder { dir, place } = folders_seen.open(self, folders)?;
        let beyond_root = place != Place::Root;
        let name = partial_name(&parts.join("/"), key);
        if beyond_root {
            // A partial lives in the staging folder, on the folder's own
            // file system, and could not be moved into place from there.
            // One kept from before the mount would only be offered again.
            let _ = self.remove_partial(&name, |_| true);
            return Err(StoreError::Unresumable(names::escape_for_display(
                &parts.join("/"),
            )));
        }
        let fd = rustix::fs::openat(
            &self.staging,
            name.as_str(),
            OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| StoreError::from_io(e.into()))?;
        // Two uploads of the same file at once must not write into one
        // partial: the second one is told, and goes without resuming. A
        // holder that is about to let go (the check of an upload that just
        // ended, which still reads the file) is waited for, briefly.
        let mut tries = 0;
        loop {
            match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) if tries < PARTIAL_LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(Errno::WOULDBLOCK) => return Err(StoreError::PartialBusy),
                Err(e) => return Err(StoreError::Io(e.into())),
            }
        }
        // The holder may have thrown the partial away between our open and
        // our lock: then ours is an orphan and the name may be someone
        // else's by now. Only the file still under the name will do.
        let ours = rustix::fs::fstat(&fd).map_err(|e| StoreError::Io(e.into()))?;
        match rustix::fs::statat(&self.staging, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_ino == ours.st_ino && now.st_dev == ours.st_dev => {}
            _ => return Err(StoreError::PartialBusy),
        }
        let mut file = File::from(fd);
        let taken_up = self.take_up_partial(&mut file, size, offset);
        if taken_up.is_err() && file.metadata().is_ok_and(|m| m.len() == 0) {
            // Nothing worth keeping (most likely it was made just now): a
            // refused resume leaves no empty partial behind. The lock is
            // ours, so the name is still this file's.
            let _ = rustix::fs::unlinkat(&self.staging, name.as_str(), AtFlags::empty());
        }
        let (kept_hash, space, reserved) = taken_up?;
        self.open_uploads.fetch_add(1, Ordering::Relaxed);
        Ok((
            Upload {
                store: self,
                file,
                dir,
                beyond_root: false,
                temp: Temp::Staged(name),
                live: true,
                keep_on_drop: true,
                written: offset,
                flushed: offset,
                kept: offset,
                reserved,
                space,
                mode: 0o600 & !self.umask,
                direct: Direct::Off,
            },
            kept_hash,
        ))
    }

    /// Readies a locked partial for an upload resuming at `offset`: cuts it
    /// there, starts hashing what is kept, and counts the rest of the file
    /// against the free space and the quota. Returns the hash in the making
    /// and what was counted (space, quota).
    fn take_up_partial(
        &self,
        file: &mut File,
        size: u64,
        offset: u64,
    ) -> Result<(Option<TrailingHash>, u64, u64), StoreError> {
        let have = file.metadata().map_err(StoreError::Io)?.len();
        if have < offset {
            return Err(StoreError::ResumeMismatch(format!(
                "asked to resume at {offset} bytes, but only {have} are kept; send it all again"
            )));
        }
        file.set_len(offset).map_err(StoreError::from_io)?;
        // The kept part was counted when it arrived (or at start-up); what
        // was cut off no longer takes room.
        self.give_back(have - offset);
        file.seek(SeekFrom::Start(offset)).map_err(StoreError::Io)?;
        // The kept part is hashed from the file by a thread of its own while
        // the rest arrives, not read back first with the socket left waiting.
        let kept_hash = if offset > 0 {
            let reader = file.try_clone().map_err(StoreError::Io)?;
            Some(TrailingHash::start(reader, offset).map_err(StoreError::Io)?)
        } else {
            None
        };
        // Counted last, once nothing can fail before the upload exists to
        // give it back.
        let space = self.hold_space(size.saturating_sub(offset))?;
        let reserved = match self.take_quota(size.saturating_sub(offset)) {
            Ok(r) => r,
            Err(e) => {
                self.release_space(space);
                return Err(e);
            }
        };
        Ok((kept_hash, space, reserved))
    }
}

/// The staging name of the partial for `path` sent under `key`: hashed, so
/// any path and key give a short, plain name.
pub(super) fn partial_name(path: &str, key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(path.as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    format!("{PARTIAL_PREFIX}{}", &h.finalize().to_hex()[..32])
}
