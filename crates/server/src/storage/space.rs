//! What an upload may take: the folder's quota and the disk's free space.
//!
//! Both are counted when an upload starts, from its declared size, so
//! uploads running side by side cannot all pass the same room, and a file
//! that cannot fit is refused before any of its bytes is written.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{SPACE_CHECK_MIN, Store, StoreError};

impl Store {
    /// Caps the bytes of all files in the folder at `bytes`. What is there
    /// now is counted once (a walk of the folder); uploads add to it as they
    /// are stored. Files deleted by others meanwhile are not noticed until
    /// the next start, so the count can only err on the safe side.
    pub fn set_quota(&mut self, bytes: u64) -> io::Result<u64> {
        let used = folder_bytes(&self.path)?;
        self.used.store(used, Ordering::Relaxed);
        self.quota = Some(bytes);
        Ok(used)
    }

    /// Counts `bytes` against the quota for an upload about to start, or
    /// refuses. Counting at the start (not when stored) keeps uploads that
    /// run side by side from all passing the same room.
    pub(super) fn take_quota(&self, bytes: u64) -> Result<u64, StoreError> {
        let Some(quota) = self.quota else {
            return Ok(0);
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= quota)
            })
            .map(|_| bytes)
            .map_err(|used| quota_used_up(bytes, quota.saturating_sub(used)))
    }

    /// Gives back what an upload counted against the quota.
    pub(super) fn give_back(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Room left under the quota, if there is one.
    fn quota_room(&self) -> Option<u64> {
        self.quota
            .map(|q| q.saturating_sub(self.used.load(Ordering::Relaxed)))
    }

    /// Checks a declared size against the limit and the free space, before
    /// any byte is written (or any folder made). Files under
    /// [`SPACE_CHECK_MIN`] skip the free space look-up (a system call per
    /// file, a fifth of the cost of a tiny upload); a disk that fills up
    /// under them is still caught by the write and reported as no space.
    ///
    /// The space is looked up on the file system the file will land on: the
    /// deepest folder of `folders` that exists already, which is another
    /// file system than the target's when one is mounted inside it.
    pub fn check_size(&self, folders: &[&str], size: u64) -> Result<(), StoreError> {
        self.check_limit(size)?;
        if size < SPACE_CHECK_MIN && self.min_free == 0 {
            return Ok(());
        }
        let landing = self.deepest_existing(folders)?;
        self.check_room_on(&landing, size)
    }

    /// Refuses a file whose whole size is over `--max-file-size`.
    pub(super) fn check_limit(&self, size: u64) -> Result<(), StoreError> {
        match self.max_file_size.filter(|l| size > *l) {
            Some(limit) => Err(StoreError::TooLarge { size, limit }),
            None => Ok(()),
        }
    }

    /// Refuses `size` bytes if the file system `dir` is on has not got
    /// them (less `--min-free`, and less what uploads under way were
    /// promised when that is the target's own file system).
    pub(super) fn check_room_on(&self, dir: &OwnedFd, size: u64) -> Result<(), StoreError> {
        let on_root = rustix::fs::fstat(dir)
            .map_err(|e| StoreError::Io(e.into()))?
            .st_dev
            == self.root_dev;
        let promised = if on_root {
            self.space_held.load(Ordering::Acquire)
        } else {
            0
        };
        let available = free_bytes(dir)?
            .saturating_sub(self.min_free)
            .saturating_sub(promised);
        if size > available {
            return Err(StoreError::NoSpace {
                needed: size,
                available,
            });
        }
        Ok(())
    }

    /// Promises `bytes` of the disk to an upload about to start, or refuses
    /// (no space). Uploads side by side are each counted, so together they
    /// cannot eat into `--min-free`; bytes already written by them are then
    /// counted twice until they finish, which only errs on the safe side.
    pub(super) fn hold_space(&self, bytes: u64) -> Result<u64, StoreError> {
        if bytes < SPACE_CHECK_MIN && self.min_free == 0 {
            return Ok(0);
        }
        let available = self.available_bytes()?.saturating_sub(self.min_free);
        self.space_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= available)
            })
            .map(|_| bytes)
            .map_err(|held| StoreError::NoSpace {
                needed: bytes,
                available: available.saturating_sub(held),
            })
    }

    pub(super) fn release_space(&self, bytes: u64) {
        let _ = self
            .space_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Bytes an unprivileged writer can still use on the target's disk.
    pub fn available_bytes(&self) -> io::Result<u64> {
        free_bytes(&self.root)
    }
}

/// Bytes an unprivileged writer can still use on the file system `fd` is on.
fn free_bytes(fd: &impl AsFd) -> io::Result<u64> {
    let vfs = rustix::fs::fstatvfs(fd)?;
    Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

/// What a batch of plan verdicts may still promise: the quota, shared by all
/// uploads, and the free space of each file system files land on (the
/// target's, and any mounted inside it), each less `--min-free`.
pub(super) struct Room {
    quota: Option<u64>,
    /// Free bytes by device number, looked up when first needed.
    disks: HashMap<u64, u64>,
}

impl Room {
    /// All the store can promise now.
    pub(super) fn new(store: &Store) -> Room {
        Room {
            quota: store.quota_room(),
            disks: HashMap::new(),
        }
    }

    /// Promises `needed` bytes on the file system `at` is on, or says there
    /// is not enough room. A file system whose free space cannot be looked
    /// up is not held against the file: the write would still catch it.
    pub(super) fn take(
        &mut self,
        store: &Store,
        at: &OwnedFd,
        needed: u64,
    ) -> Result<(), StoreError> {
        let dev = rustix::fs::fstat(at)
            .map_err(|e| StoreError::Io(e.into()))?
            .st_dev;
        let disk = self.disks.entry(dev).or_insert_with(|| {
            free_bytes(at).map_or(u64::MAX, |a| a.saturating_sub(store.min_free))
        });
        // The same refusal as the upload itself would get: the quota's
        // when that is what is short.
        if let Some(quota) = self.quota
            && needed > quota
        {
            return Err(quota_used_up(needed, quota));
        }
        if needed > *disk {
            return Err(StoreError::NoSpace {
                needed,
                available: *disk,
            });
        }
        *disk -= needed;
        if let Some(q) = self.quota.as_mut() {
            *q -= needed;
        }
        Ok(())
    }
}

/// The refusal of a file the quota has no room left for, the same from a
/// plan as from the upload.
fn quota_used_up(needed: u64, left: u64) -> StoreError {
    StoreError::Limit(format!(
        "the folder's quota is used up: {needed} bytes needed, {left} left"
    ))
}

/// Bytes of the regular files under `root`, kept partials included.
/// A folder that cannot be read (someone else's, say) is passed over with a
/// warning rather than keeping the server from starting; only the target
/// folder itself must be readable. A file gone meanwhile counts nothing.
fn folder_bytes(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir != root => {
                tracing::warn!("quota: cannot count what {} holds: {e}", dir.display());
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // Staging counts too: kept partials take room.
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    Ok(total)
}
