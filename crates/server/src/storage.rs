//! Where uploads land, and the rules that keep that place honest.
//!
//! - Bytes go to an anonymous file (`O_TMPFILE`) in the folder the upload
//!   is headed for: it has no name at all until it is complete, and a crash
//!   leaves nothing behind. Where the file system cannot do that, a file
//!   with a short generated name in the private `.ferry-staging` folder
//!   stands in for it (on the target's own file system only: one mounted
//!   inside it must offer `O_TMPFILE`, or its uploads are refused).
//! - Only a complete, verified upload is made durable and then linked into
//!   place with a no-replace link or rename (so a clash is detected
//!   atomically, not by a check-then-act race), and its folder synced: once
//!   the ack is sent, the file survives a crash.
//! - Every lookup, mkdir and rename happens relative to directory handles
//!   opened with `O_NOFOLLOW`, starting from a handle on the target folder
//!   opened once. A symlink anywhere on the way is refused, and swapping a
//!   folder for a symlink mid-upload cannot redirect a write.
//! - An upload dropped before commit leaves nothing; staging leftovers from
//!   a crash are removed at start-up.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_proto::{Clash, ErrorCode, OnClash, PlanEntry, PlanVerdict, Verdict, path as names};
use rustix::fs::{Advice, AtFlags, FileType, Mode, OFlags, RenameFlags, StatxFlags};
use rustix::io::Errno;
use thiserror::Error;

use crate::new_folders::NewFolders;
use crate::trailing_hash::TrailingHash;

/// The staging folder's name inside the target folder. Uploads may not use
/// it as their first component.
pub const STAGING_DIR: &str = ".ferry-staging";

/// Staging names of partial uploads kept for resuming start with this.
pub const PARTIAL_PREFIX: &str = "partial-";

/// How long a partial upload is kept for its sender to come back, unless
/// the server is told otherwise.
pub const PARTIAL_TTL_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Uploads at least this big are kept as partials when interrupted, if
/// their sender gives a resume key.
pub const RESUMABLE_MIN: u64 = 1 << 20;

/// Declared sizes from which the free space is looked up before accepting.
pub const SPACE_CHECK_MIN: u64 = 1 << 20;

/// Highest `(n)` tried when looking for a free name.
const MAX_RENAME_TRIES: u32 = 10_000;

/// Why storing failed; each maps onto a wire error code.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    BadName(String),
    #[error("declared size {size} is over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("not enough space: {needed} bytes needed, {available} available")]
    NoSpace { needed: u64, available: u64 },
    #[error("{0}")]
    Exists(String),
    /// One of the server's limits says no.
    #[error("{0}")]
    Limit(String),
    /// A resumed upload does not fit the partial kept for it.
    #[error("{0}")]
    ResumeMismatch(String),
    /// Another upload of the same file is writing its partial right now.
    #[error("the same file is being uploaded on another connection")]
    PartialBusy,
    /// The upload goes to another file system than the folder's own (one
    /// mounted inside it), where no partial can be kept for it.
    #[error("no partial can be kept for `{0}`: it is on another file system")]
    Unresumable(String),
    /// The file system cannot store an upload the way the server must.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl StoreError {
    /// The wire code a client is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::BadName(_) => ErrorCode::BadName,
            StoreError::TooLarge { .. } => ErrorCode::TooLarge,
            StoreError::NoSpace { .. } => ErrorCode::NoSpace,
            StoreError::Exists(_) => ErrorCode::Exists,
            StoreError::Limit(_) => ErrorCode::LimitReached,
            StoreError::ResumeMismatch(_)
            | StoreError::PartialBusy
            | StoreError::Unresumable(_) => ErrorCode::ResumeMismatch,
            StoreError::Unsupported(_) => ErrorCode::Io,
            StoreError::Io(_) => ErrorCode::Io,
        }
    }

    /// Classifies an I/O error, so a full disk reads as "no space".
    pub(crate) fn from_io(e: io::Error) -> Self {
        if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error())
            || e.raw_os_error() == Some(Errno::DQUOT.raw_os_error())
        {
            StoreError::NoSpace {
                needed: 0,
                available: 0,
            }
        } else {
            StoreError::Io(e)
        }
    }
}

/// The target folder, opened once.
#[derive(Debug)]
pub struct Store {
    root: OwnedFd,
    staging: OwnedFd,
    path: PathBuf,
    max_file_size: Option<u64>,
    next_temp: AtomicU64,
    /// Free space no upload may eat into.
    min_free: u64,
    /// Refuse names Windows cannot store.
    portable: bool,
    /// Most bytes the folder may hold, and how many it holds.
    quota: Option<u64>,
    used: AtomicU64,
    /// Whether to try `O_TMPFILE` first (tests turn it off to exercise the
    /// staging folder that stands in for it).
    anonymous_temp: bool,
    /// Whether `linkat(AT_EMPTY_PATH)` works here (it needs a capability);
    /// cleared the first time it does not.
    link_empty_path: AtomicBool,
    /// How long partials of interrupted uploads are kept.
    partial_ttl: Duration,
    /// The process's umask, which new files' modes pass through.
    umask: u32,
    /// Disk space promised to uploads under way.
    space_held: AtomicU64,
    /// The target folder's file system: a sync of it covers only that.
    root_dev: u64,
    /// The target folder's mount, where the kernel says (Linux 5.8 on).
    root_mount: Option<u64>,
    /// Folders made for uploads and not yet synced.
    new_folders: NewFolders,
    /// Uploads open now (each holds an open file until committed).
    open_uploads: AtomicUsize,
}

/// See [`Store::sync_handle`].
#[derive(Debug)]
pub struct SyncHandle(Option<OwnedFd>);

/// A file stored for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `/`-separated path relative to the target folder.
    pub stored_as: String,
    pub clash: Clash,
}

/// A complete, verified upload waiting for [`Store::link_group`].
#[derive(Debug)]
pub struct Finished<'s> {
    pub upload: Upload<'s>,
    pub parts: Vec<String>,
    pub policy: OnClash,
    pub digest: blake3::Hash,
}

impl Store {
    /// Opens (creating if needed) the target folder and its staging folder,
    /// and removes temporary files a previous run left behind. Returns the
    /// store and how many leftovers were removed.
    pub fn open(
        path: &Path,
        max_file_size: Option<u64>,
        partial_ttl: Duration,
    ) -> io::Result<(Store, usize)> {
        fs::create_dir_all(path)?;
        let root = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match rustix::fs::mkdirat(&root, STAGING_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let staging = open_dir_nofollow(&root, STAGING_DIR)?;
        let root_dev = rustix::fs::fstat(&root)?.st_dev;
        let root_mount = mount_id(&root);
        let store = Store {
            root,
            staging,
            path: path.to_path_buf(),
            max_file_size,
            next_temp: AtomicU64::new(0),
            anonymous_temp: true,
            min_free: 0,
            portable: false,
            quota: None,
            used: AtomicU64::new(0),
            link_empty_path: AtomicBool::new(true),
            partial_ttl,
            umask: current_umask(),
            space_held: AtomicU64::new(0),
            root_dev,
            root_mount,
            new_folders: NewFolders::new(root_dev),
            open_uploads: AtomicUsize::new(0),
        };
        let cleaned = store.clean_staging()?;
        Ok((store, cleaned))
    }

    /// Keeps `bytes` of the disk free: uploads that would eat into them are
    /// refused as no space (and every upload's size is then checked).
    pub fn keep_free(&mut self, bytes: u64) {
        self.min_free = bytes;
    }

    /// The target folder as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_file_size(&self) -> Option<u64> {
        self.max_file_size
    }

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
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a < self.partial_ttl) {
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

    /// Checks a wire path against the name rules and returns its
    /// components. What is on disk is checked when the folders are walked.
    /// Callers pass names in canonical (NFC) form ([`names::canonical`]).
    pub fn check_path<'p>(&self, path: &'p str) -> Result<Vec<&'p str>, StoreError> {
        let parts = names::components(path).map_err(|e| StoreError::BadName(e.to_string()))?;
        if parts.first() == Some(&STAGING_DIR) {
            return Err(StoreError::BadName(format!("`{STAGING_DIR}` is reserved")));
        }
        if self.portable {
            for part in &parts {
                names::check_portable(part).map_err(|e| StoreError::BadName(e.to_string()))?;
            }
        }
        Ok(parts)
    }

    /// Refuses names Windows cannot store, so the folder can be copied to
    /// any system.
    pub fn keep_names_portable(&mut self) {
        self.portable = true;
    }

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
    fn take_quota(&self, bytes: u64) -> Result<u64, StoreError> {
        let Some(quota) = self.quota else {
            return Ok(0);
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= quota)
            })
            .map(|_| bytes)
            .map_err(|used| {
                StoreError::Limit(format!(
                    "the folder's quota is used up: {bytes} bytes needed, {} left",
                    quota.saturating_sub(used)
                ))
            })
    }

    /// Gives back what an upload counted against the quota.
    fn give_back(&self, bytes: u64) {
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
        if let Some(limit) = self.max_file_size.filter(|l| size > *l) {
            return Err(StoreError::TooLarge { size, limit });
        }
        if size < SPACE_CHECK_MIN && self.min_free == 0 {
            return Ok(());
        }
        let landing = self.deepest_existing(folders)?;
        self.check_room_on(&landing, size)
    }

    /// Refuses `size` bytes if the file system `dir` is on has not got
    /// them (less `--min-free`, and less what uploads under way were
    /// promised when that is the target's own file system).
    fn check_room_on(&self, dir: &OwnedFd, size: u64) -> Result<(), StoreError> {
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

    /// The deepest of `folders` (a path below the root) that exists now.
    /// Whatever is created below it lands on its file system.
    fn deepest_existing(&self, folders: &[&str]) -> io::Result<OwnedFd> {
        let mut dir = rustix::io::dup(&self.root)?;
        for part in folders {
            match open_dir_nofollow(&dir, part) {
                Ok(next) => dir = next,
                // Missing: made later, on this file system. Anything else
                // (a file or symlink on the way, no permission) stops the
                // upload's own walk right after, with the precise reason.
                Err(_) => break,
            }
        }
        Ok(dir)
    }

    /// Promises `bytes` of the disk to an upload about to start, or refuses
    /// (no space). Uploads side by side are each counted, so together they
    /// cannot eat into `--min-free`; bytes already written by them are then
    /// counted twice until they finish, which only errs on the safe side.
    fn hold_space(&self, bytes: u64) -> Result<u64, StoreError> {
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

    fn release_space(&self, bytes: u64) {
        let _ = self
            .space_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Whether `dir` is on another mount than the target folder: another
    /// file system mounted inside it, or another mount of the same one (a
    /// bind mount). Nothing can be linked or renamed there from the staging
    /// folder, and the store's syncs may not cover it.
    fn is_beyond_root(&self, dir: &impl AsFd) -> io::Result<bool> {
        Ok(self.place_of(dir)? != Place::Root)
    }

    /// Where `dir` is, seen from the target folder.
    fn place_of(&self, dir: &impl AsFd) -> io::Result<Place> {
        if rustix::fs::fstat(dir)?.st_dev != self.root_dev {
            return Ok(Place::OtherDisk);
        }
        Ok(match (self.root_mount, mount_id(dir)) {
            (Some(root), Some(here)) if root != here => Place::OtherMount,
            // Where the mount cannot be told, a bind mount goes unnoticed
            // (see `replace`).
            _ => Place::Root,
        })
    }

    /// Bytes an unprivileged writer can still use on the target's disk.
    pub fn available_bytes(&self) -> io::Result<u64> {
        free_bytes(&self.root)
    }

    /// Starts an upload headed for `parts` (checked by [`Store::check_path`]):
    /// walks to its folder, creating folders as needed and refusing files
    /// and symlinks on the way, and opens a nameless file there.
    pub fn begin(
        &self,
        parts: &[&str],
        size: u64,
        folders_seen: &mut FolderCache,
    ) -> Result<Upload<'_>, StoreError> {
        let (_, folders) = parts
            .split_last()
            .ok_or_else(|| StoreError::BadName("empty".into()))?;
        let Folder { dir, place } = folders_seen.open(self, folders)?;
        let beyond_root = place != Place::Root;
        // The mode is what the file keeps once in place (less the umask).
        let mode = Mode::from_raw_mode(0o644);
        let anonymous = if self.anonymous_temp {
            rustix::fs::openat(
                &dir,
                ".",
                OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
                mode,
            )
        } else {
            Err(Errno::OPNOTSUPP)
        };
        let (fd, temp) = match anonymous {
            Ok(fd) => (fd, Temp::Anonymous),
            // No O_TMPFILE on a file system mounted inside the folder: the
            // staging folder is on another one, and a file there could not
            // be moved into place.
            Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) | Err(Errno::INVAL) if beyond_root => {
                return Err(StoreError::Unsupported(format!(
                    "`{}` is on a file system mounted inside the upload folder that cannot \
                     hold nameless files (O_TMPFILE)",
                    names::escape_for_display(&folders.join("/"))
                )));
            }
            // No O_TMPFILE here: a named file in the private staging folder.
            Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) | Err(Errno::INVAL) => {
                let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
                let name = format!("{}-{n}.part", std::process::id());
                let fd = rustix::fs::openat(
                    &self.staging,
                    name.as_str(),
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode,
                )
                .map_err(|e| StoreError::from_io(e.into()))?;
                (fd, Temp::Staged(name))
            }
            Err(e) => return Err(StoreError::from_io(e.into())),
        };
        // Counted once the file exists, so a failure above leaks nothing;
        // a refusal here drops the file, which had no name yet. What lands
        // on a file system mounted inside is checked against that one and
        // promises nothing of the target's (a bind mount is the target's).
        let space = if place == Place::OtherDisk {
            if size >= SPACE_CHECK_MIN || self.min_free > 0 {
                self.check_room_on(&dir, size)?;
            }
            0
        } else {
            self.hold_space(size)?
        };
        let reserved = match self.take_quota(size) {
            Ok(r) => r,
            Err(e) => {
                self.release_space(space);
                return Err(e);
            }
        };
        self.open_uploads.fetch_add(1, Ordering::Relaxed);
        Ok(Upload {
            store: self,
            file: File::from(fd),
            dir,
            beyond_root,
            temp,
            live: true,
            keep_on_drop: false,
            written: 0,
            flushed: 0,
            reserved,
            space,
            mode: 0o644 & !self.umask,
        })
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
            let _ = rustix::fs::unlinkat(&self.staging, name.as_str(), AtFlags::empty());
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
        // partial: the second one is told, and goes without resuming.
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(StoreError::PartialBusy),
            Err(e) => return Err(StoreError::Io(e.into())),
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
        let have = file.metadata().map_err(StoreError::Io)?.len();
        if have < offset {
            return Err(StoreError::ResumeMismatch(format!(
                "asked to resume at {offset} bytes, but only {have} are kept; send it all again"
            )));
        }
        file.set_len(offset).map_err(StoreError::from_io)?;
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
        // give it back. The kept part was counted when it arrived (or at
        // start-up).
        let space = self.hold_space(size.saturating_sub(offset))?;
        let reserved = match self.take_quota(size.saturating_sub(offset)) {
            Ok(r) => r,
            Err(e) => {
                self.release_space(space);
                return Err(e);
            }
        };
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
                reserved,
                space,
                mode: 0o600 & !self.umask,
            },
            kept_hash,
        ))
    }

    /// What would happen to each of `files` if it were sent now, changing
    /// nothing. Free space is shared out in order, so a batch that cannot
    /// all fit is told which files would not.
    pub fn verdicts(&self, files: &[PlanEntry]) -> Vec<PlanVerdict> {
        let mut room = Room {
            quota: self.quota_room(),
            disks: HashMap::new(),
        };
        files
            .iter()
            .map(|f| PlanVerdict {
                id: f.id,
                verdict: self.verdict(f, &mut room),
            })
            .collect()
    }

    fn verdict(&self, f: &PlanEntry, room: &mut Room) -> Verdict {
        let refused = |e: StoreError| Verdict::Refused {
            code: e.code(),
            message: e.to_string(),
        };
        let path = names::canonical(&f.path);
        let parts = match self.check_path(&path) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        if let Some(limit) = self.max_file_size.filter(|l| f.size > *l) {
            return refused(StoreError::TooLarge {
                size: f.size,
                limit,
            });
        }
        let Some((name, folders)) = parts.split_last() else {
            return refused(StoreError::BadName("empty".into()));
        };
        let dir = match self.walk_existing(folders) {
            Ok(dir) => dir,
            Err(e) => return refused(e),
        };
        let mut needed = f.size;
        // Nothing resumes into a file system mounted inside the folder.
        let beyond_root = dir
            .as_ref()
            .is_some_and(|d| self.is_beyond_root(d).unwrap_or(true));
        let kept = f
            .resume_key
            .as_ref()
            .filter(|_| !beyond_root)
            .and_then(|key| {
                let st = rustix::fs::statat(
                    &self.staging,
                    partial_name(&path, key).as_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ok()?;
                let have = st.st_size as u64;
                // A partial may hold the whole file (the connection went between
                // body and trailer): resuming then sends no bytes at all.
                (have > 0 && have <= f.size).then_some(have)
            });
        let existing = dir.as_ref().and_then(|d| {
            rustix::fs::statat(d, *name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| FileType::from_raw_mode(st.st_mode))
        });
        let prefix: String = folders.iter().map(|p| format!("{p}/")).collect();
        let verdict = match (kept, existing, f.on_clash) {
            (Some(offset), _, _) => {
                needed = f.size - offset;
                Verdict::Resume { offset }
            }
            (None, None, _) => Verdict::New,
            (None, Some(FileType::RegularFile), OnClash::SkipIdentical)
                if self.same_as(dir.as_ref(), name, f) =>
            {
                needed = 0;
                Verdict::Identical
            }
            (None, Some(FileType::RegularFile), OnClash::Overwrite) => Verdict::Clash {
                result: Clash::Overwritten,
                stored_as: path.to_string(),
            },
            (None, Some(_), OnClash::Overwrite) => {
                return refused(StoreError::Exists(format!(
                    "`{}` exists and is not a regular file",
                    names::escape_for_display(&path)
                )));
            }
            (None, Some(_), _) => match dir.as_ref().and_then(|d| free_name(d, name)) {
                Some(free) => Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: format!("{prefix}{free}"),
                },
                None => {
                    return refused(StoreError::Exists(format!(
                        "no free name for `{}`",
                        names::escape_for_display(&path)
                    )));
                }
            },
        };
        if needed > 0 {
            // The file lands on the file system of its folder, or of the
            // deepest one on its way that exists.
            let landing = match dir {
                Some(dir) => Ok(dir),
                None => self.deepest_existing(folders),
            };
            let taken = landing
                .map_err(StoreError::Io)
                .and_then(|at| room.take(self, &at, needed));
            if let Err(e) = taken {
                return refused(e);
            }
        }
        verdict
    }

    /// Whether regular file `name` in `dir` holds exactly what `f` says.
    fn same_as(&self, dir: Option<&OwnedFd>, name: &str, f: &PlanEntry) -> bool {
        let (Some(dir), Some(want)) = (dir, f.blake3.as_deref()) else {
            return false;
        };
        let Ok(want) = blake3::Hash::from_hex(want) else {
            return false;
        };
        same_content(dir, name, f.size, &want).unwrap_or(false)
    }

    /// Like the walk an upload makes, but creating nothing: `None` when a
    /// folder on the way does not exist yet.
    fn walk_existing(&self, parts: &[&str]) -> Result<Option<OwnedFd>, StoreError> {
        let mut dir = rustix::io::dup(&self.root).map_err(|e| StoreError::Io(e.into()))?;
        for (i, part) in parts.iter().enumerate() {
            dir = match open_dir_nofollow(&dir, part) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(None),
                Err(e) => {
                    return Err(not_a_folder(
                        e,
                        &names::escape_for_display(&parts[..=i].join("/")),
                    ));
                }
            };
        }
        Ok(Some(dir))
    }

    /// Makes everything written to the target's file system so far durable
    /// with one `syncfs`: the bytes of uploads not linked yet and the names
    /// of those linked since the last sync, for every session at once.
    ///
    /// Many small files are committed in groups built on this (see the
    /// committer): a sync makes a group's bytes durable, the group is linked
    /// with [`Store::link_group`], and the next sync makes its names durable
    /// before it is acked. A sync per group instead of two fsyncs per file is
    /// what lets thousands of small files through quickly, and no file is
    /// visible before its bytes are on disk.
    pub fn sync(&self, via: &SyncHandle) -> io::Result<()> {
        // Folders made before this point are covered by the sync below.
        let folders = self.new_folders.mark();
        rustix::fs::syncfs(via.0.as_ref().unwrap_or(&self.root))?;
        self.new_folders.synced(folders);
        Ok(())
    }

    /// How many uploads are open (each holds an open file until it is
    /// committed or dropped).
    pub fn open_uploads(&self) -> usize {
        self.open_uploads.load(Ordering::Relaxed)
    }

    /// A handle of its own on the target folder, for a committer to
    /// [`Store::sync`] through. The kernel reports a failed writeback once
    /// to each open handle that syncs, so with one handle for all sessions
    /// only the first to sync would hear of it, and another could ack files
    /// whose bytes never reached the disk. (Where no handle can be opened,
    /// the shared one is used.)
    pub fn sync_handle(&self) -> SyncHandle {
        let own = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        if let Err(e) = &own {
            tracing::warn!("cannot open a sync handle of its own, sharing one: {e}");
        }
        SyncHandle(own.ok())
    }

    /// Links finished uploads into place, in order, without syncing: call
    /// only once a [`Store::sync`] has made their bytes durable, and ack
    /// them only after the next one. Returns one result per upload.
    pub fn link_group(&self, batch: Vec<Finished<'_>>) -> Vec<Result<Stored, StoreError>> {
        batch
            .into_iter()
            .map(|mut f| {
                let parts: Vec<&str> = f.parts.iter().map(String::as_str).collect();
                f.upload
                    .place(&parts, f.policy, &f.digest)
                    .map(|(stored, _)| stored)
            })
            .collect()
    }

    /// Creates folder `path` (and its parents) inside the target.
    pub fn mkdir(&self, path: &str) -> Result<String, StoreError> {
        let parts = self.check_path(path)?;
        self.walk(&parts)?;
        // Acked on its own, with no group commit to cover it.
        self.new_folders.sync_all().map_err(StoreError::from_io)?;
        Ok(parts.join("/"))
    }

    /// Opens the folders named by `parts`, one handle at a time from the
    /// root, creating missing ones and refusing symlinks and files on the
    /// way. Returns a handle on the last.
    fn walk(&self, parts: &[&str]) -> Result<OwnedFd, StoreError> {
        let mut dir = rustix::io::dup(&self.root).map_err(|e| StoreError::Io(e.into()))?;
        for (i, part) in parts.iter().enumerate() {
            let shown = || names::escape_for_display(&parts[..=i].join("/"));
            let next = match open_dir_nofollow(&dir, part) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    // The new entry must be durable before any ack can vouch
                    // for a file inside it: the ledger sees to that.
                    self.new_folders
                        .make(&dir, part)
                        .map_err(StoreError::from_io)?;
                    open_dir_nofollow(&dir, part).map_err(|e| not_a_folder(e, &shown()))?
                }
                Err(e) => return Err(not_a_folder(e, &shown())),
            };
            dir = next;
        }
        Ok(dir)
    }
}

/// Maps "not a folder" and "is a symlink" to a name refusal.
fn not_a_folder(e: io::Error, shown: &str) -> StoreError {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::NOTDIR) | Some(Errno::LOOP) => StoreError::BadName(format!(
            "`{shown}` exists and is not a folder (or is a symlink)"
        )),
        _ => StoreError::from_io(e),
    }
}

/// The mount `fd` is on: from statx (Linux 5.8 on), or else from the
/// descriptor's entry in /proc (Linux 3.15 on).
fn mount_id(fd: &impl AsFd) -> Option<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok();
    if let Some(st) = st.filter(|st| st.stx_mask & StatxFlags::MNT_ID.bits() != 0) {
        return Some(st.stx_mnt_id);
    }
    mount_id_from_proc(fd)
}

fn mount_id_from_proc(fd: &impl AsFd) -> Option<u64> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// Bytes an unprivileged writer can still use on the file system `fd` is on.
fn free_bytes(fd: &impl AsFd) -> io::Result<u64> {
    let vfs = rustix::fs::fstatvfs(fd)?;
    Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

fn open_dir_nofollow(dir: &impl AsFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// What a batch of plan verdicts may still promise: the quota, shared by all
/// uploads, and the free space of each file system files land on (the
/// target's, and any mounted inside it), each less `--min-free`.
struct Room {
    quota: Option<u64>,
    /// Free bytes by device number, looked up when first needed.
    disks: HashMap<u64, u64>,
}

impl Room {
    /// Promises `needed` bytes on the file system `at` is on, or says there
    /// is not enough room. A file system whose free space cannot be looked
    /// up is not held against the file: the write would still catch it.
    fn take(&mut self, store: &Store, at: &OwnedFd, needed: u64) -> Result<(), StoreError> {
        let dev = rustix::fs::fstat(at)
            .map_err(|e| StoreError::Io(e.into()))?
            .st_dev;
        let disk = self.disks.entry(dev).or_insert_with(|| {
            free_bytes(at).map_or(u64::MAX, |a| a.saturating_sub(store.min_free))
        });
        let quota = self.quota.unwrap_or(u64::MAX);
        let available = (*disk).min(quota);
        if needed > available {
            return Err(StoreError::NoSpace { needed, available });
        }
        *disk -= needed;
        if let Some(q) = self.quota.as_mut() {
            *q -= needed;
        }
        Ok(())
    }
}

/// The folder the last upload of a session went to, kept open: files of one
/// folder usually arrive together, and walking from the root for each costs
/// an open and a close per component. A cached handle keeps pointing at the
/// folder that was checked, even if the name is later moved or replaced.
#[derive(Debug, Default)]
pub struct FolderCache {
    last: Option<(Vec<String>, Folder)>,
}

/// A folder uploads go to.
#[derive(Debug, Clone)]
struct Folder {
    dir: Arc<OwnedFd>,
    place: Place,
}

/// Where a folder is, seen from the target folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On its file system and mount: the staging folder can reach it.
    Root,
    /// On the same file system through another mount (a bind mount):
    /// nothing can be linked or renamed there from the staging folder.
    OtherMount,
    /// On another file system mounted inside: nothing can be moved there
    /// from staging, the store's syncs do not cover it, and its free space
    /// is its own.
    OtherDisk,
}

impl FolderCache {
    fn open(&mut self, store: &Store, folders: &[&str]) -> Result<Folder, StoreError> {
        if let Some((parts, folder)) = &self.last {
            if parts.iter().map(String::as_str).eq(folders.iter().copied()) {
                return Ok(folder.clone());
            }
        }
        let dir = store.walk(folders)?;
        let place = store.place_of(&dir).map_err(StoreError::Io)?;
        let folder = Folder {
            dir: Arc::new(dir),
            place,
        };
        self.last = Some((
            folders.iter().map(|f| f.to_string()).collect(),
            folder.clone(),
        ));
        Ok(folder)
    }
}

/// One upload in progress. Dropping it without [`Upload::commit`] leaves
/// nothing behind.
#[derive(Debug)]
pub struct Upload<'s> {
    store: &'s Store,
    file: File,
    /// The folder the file is headed for.
    dir: Arc<OwnedFd>,
    /// Whether that folder is on another file system (see [`Folder`]).
    beyond_root: bool,
    temp: Temp,
    /// Whether the temporary file still needs cleaning up on drop.
    live: bool,
    /// A partial kept for resuming stays when the upload is dropped.
    keep_on_drop: bool,
    /// Bytes counted against the quota for this upload.
    reserved: u64,
    /// Disk space promised to this upload while it runs.
    space: u64,
    /// The permission bits the file has now.
    mode: u32,
    /// Bytes written so far, and how many of them were handed to writeback.
    written: u64,
    flushed: u64,
}

/// How many freshly written bytes are handed to the disk at a time while a
/// big upload is still arriving, so the final sync finds little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Where an upload's bytes live until it is committed.
#[derive(Debug)]
enum Temp {
    /// An `O_TMPFILE` inode: no name, gone by itself if never linked.
    Anonymous,
    /// A named file in the staging folder.
    Staged(String),
}

impl Upload<'_> {
    /// Appends bytes; a full disk is reported as [`StoreError::NoSpace`].
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).map_err(StoreError::from_io)?;
        self.written += bytes.len() as u64;
        if self.written - self.flushed >= WRITEBACK_STEP {
            // POSIX_FADV_DONTNEED starts asynchronous writeback of the range
            // (and later lets its clean pages go): the disk works while the
            // network does, instead of all at once in the final fsync.
            let len = NonZeroU64::new(self.written - self.flushed);
            let _ = rustix::fs::fadvise(&self.file, self.flushed, len, Advice::DontNeed);
            self.flushed = self.written;
        }
        Ok(())
    }

    /// Gives the file the modification time its sender had.
    pub fn set_mtime(&self, secs: i64, nanos: u32) -> Result<(), StoreError> {
        let at = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos.min(999_999_999).into(),
        };
        let times = rustix::fs::Timestamps {
            last_access: at,
            last_modification: at,
        };
        rustix::fs::futimens(&self.file, &times).map_err(|e| StoreError::Io(e.into()))
    }

    /// Sets the file's permission bits (the server's, never the sender's).
    pub fn set_mode(&mut self, mode: u32) -> Result<(), StoreError> {
        // Usually the file was made with them already: skip the system call.
        if mode == self.mode {
            return Ok(());
        }
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode))
            .map_err(|e| StoreError::Io(e.into()))?;
        self.mode = mode;
        Ok(())
    }

    /// Whether the upload goes to another file system than the target
    /// folder's (one mounted inside it): [`Store::sync`] does not cover it,
    /// so it must be committed on its own with [`Upload::commit`].
    pub fn beyond_root(&self) -> bool {
        self.beyond_root
    }

    /// Throws the upload away, a kept partial included (its bytes turned out
    /// not to match, so resuming from them again would fail again).
    pub fn discard(mut self) {
        self.keep_on_drop = false;
    }

    /// Makes the upload durable and visible as `parts` (already checked by
    /// [`Store::check_path`]) under the clash policy, with an fsync of the
    /// file and of its folder, and of the parents of folders made but not
    /// yet synced (by any session). `digest` is the upload's BLAKE3, used to
    /// recognise an identical existing file.
    pub fn commit(
        mut self,
        parts: &[&str],
        policy: OnClash,
        digest: &blake3::Hash,
    ) -> Result<Stored, StoreError> {
        self.file.sync_all().map_err(StoreError::from_io)?;
        let (stored, dir) = self.place(parts, policy, digest)?;
        rustix::fs::fsync(&*dir).map_err(|e| StoreError::from_io(e.into()))?;
        // The folders on its way may be new too.
        self.store
            .new_folders
            .sync_all()
            .map_err(StoreError::from_io)?;
        Ok(stored)
    }

    /// Links the upload into place under the clash policy, without any
    /// fsync; returns where it went and a handle on its folder.
    fn place(
        &mut self,
        parts: &[&str],
        policy: OnClash,
        digest: &blake3::Hash,
    ) -> Result<(Stored, Arc<OwnedFd>), StoreError> {
        // Whatever happens now, a partial has served its purpose.
        self.keep_on_drop = false;
        let (name, folders) = parts
            .split_last()
            .ok_or_else(|| StoreError::BadName("empty".into()))?;
        let dir = Arc::clone(&self.dir);
        let prefix: String = folders.iter().map(|f| format!("{f}/")).collect();
        // Most names are free: try the no-replace link first and look at
        // what is there only when it is taken.
        let (final_name, clash) = match self.link_noreplace(&dir, name) {
            Ok(()) => (name.to_string(), Clash::None),
            Err(Errno::EXIST) => self.resolve_clash(&dir, name, &prefix, policy, digest)?,
            Err(e) => return Err(StoreError::from_io(e.into())),
        };
        if clash == Clash::Identical {
            // Nothing new is kept.
            self.store.give_back(self.reserved);
        }
        // Counted for good now (or given back above); its bytes are on the
        // disk, where free space already shows them.
        self.reserved = 0;
        self.store.release_space(self.space);
        self.space = 0;
        let stored = Stored {
            stored_as: format!("{prefix}{final_name}"),
            clash,
        };
        Ok((stored, dir))
    }

    /// `name` is taken in `dir`: applies the clash policy.
    fn resolve_clash(
        &mut self,
        dir: &OwnedFd,
        name: &str,
        prefix: &str,
        policy: OnClash,
        digest: &blake3::Hash,
    ) -> Result<(String, Clash), StoreError> {
        let existing = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            // Gone since the link failed: replacing or renaming both work.
            Err(Errno::NOENT) => None,
            Err(e) => return Err(StoreError::Io(e.into())),
        };
        match (policy, existing) {
            (OnClash::Overwrite, Some(FileType::RegularFile) | None) => {
                let old = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(0, |st| st.st_size as u64);
                self.replace(dir, name)?;
                // The replaced file's bytes no longer count.
                let _ = self
                    .store
                    .used
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                        Some(u.saturating_sub(old))
                    });
                Ok((name.to_string(), Clash::Overwritten))
            }
            (OnClash::Overwrite, Some(_)) => Err(StoreError::Exists(format!(
                "`{}` exists and is not a regular file",
                names::escape_for_display(&format!("{prefix}{name}"))
            ))),
            (OnClash::SkipIdentical, Some(FileType::RegularFile))
                if same_content(dir, name, self.written, digest)? =>
            {
                // The temporary file goes when `self` is dropped.
                Ok((name.to_string(), Clash::Identical))
            }
            (OnClash::Rename | OnClash::SkipIdentical, _) => {
                Ok((self.link_free_name(dir, name)?, Clash::Renamed))
            }
        }
    }

    /// Gives the upload the name `name` in `dir`, failing with `EXIST`
    /// rather than replacing anything.
    fn link_noreplace(&mut self, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
        match &self.temp {
            Temp::Anonymous => self.link_anonymous(dir, name)?,
            Temp::Staged(temp) => {
                let staging = &self.store.staging;
                let temp = temp.as_str();
                match rustix::fs::renameat_with(staging, temp, dir, name, RenameFlags::NOREPLACE) {
                    Ok(()) => {}
                    // File systems without RENAME_NOREPLACE: a hard link is
                    // just as atomic about refusing an existing name.
                    Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                        rustix::fs::linkat(staging, temp, dir, name, AtFlags::empty())?;
                        let _ = rustix::fs::unlinkat(staging, temp, AtFlags::empty());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.live = false;
        Ok(())
    }

    /// Links the nameless file into `dir`. `linkat` with `AT_EMPTY_PATH`
    /// is one cheap call but needs a capability; without it the file is
    /// named through `/proc`, the way open(2) documents for `O_TMPFILE`.
    fn link_anonymous(&self, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
        let direct = &self.store.link_empty_path;
        if direct.load(Ordering::Relaxed) {
            match rustix::fs::linkat(&self.file, "", dir, name, AtFlags::EMPTY_PATH) {
                Err(Errno::NOENT) | Err(Errno::PERM) | Err(Errno::INVAL) => {
                    direct.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let me = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            me.as_str(),
            dir,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )
    }

    /// Atomically replaces regular file `name` in `dir` with the upload.
    fn replace(&mut self, dir: &OwnedFd, name: &str) -> Result<(), StoreError> {
        let io = |e: Errno| StoreError::from_io(e.into());
        match &self.temp {
            Temp::Staged(temp) => {
                rustix::fs::renameat(&self.store.staging, temp.as_str(), dir, name).map_err(io)?;
            }
            Temp::Anonymous => {
                // Link under a second name first, then rename over the old
                // file: readers see the old file or the new, never neither.
                // The second name is in the staging folder, which start-up
                // cleans, so a crash in between leaves nothing in sight. A
                // file system mounted inside has no staging folder: there
                // the name is a hidden one next to the file.
                let n = self.store.next_temp.fetch_add(1, Ordering::Relaxed);
                let staged = format!("{}-{n}.swap", std::process::id());
                let in_staging = !self.beyond_root
                    && match self.link_anonymous(&self.store.staging, &staged) {
                        Ok(()) => true,
                        // A bind mount an older kernel could not tell apart.
                        Err(Errno::XDEV) => false,
                        Err(e) => return Err(io(e)),
                    };
                let (via, second) = if in_staging {
                    (&self.store.staging, staged)
                } else {
                    let hidden = format!(".ferry-{}-{n}.swap", std::process::id());
                    self.link_anonymous(dir, &hidden).map_err(io)?;
                    (dir, hidden)
                };
                if let Err(e) = rustix::fs::renameat(via, second.as_str(), dir, name) {
                    let _ = rustix::fs::unlinkat(via, second.as_str(), AtFlags::empty());
                    return Err(io(e));
                }
            }
        }
        self.live = false;
        Ok(())
    }

    /// Stores under the first free `stem (n).ext`.
    fn link_free_name(&mut self, dir: &OwnedFd, name: &str) -> Result<String, StoreError> {
        for n in 1..=MAX_RENAME_TRIES {
            let candidate = numbered(name, n);
            names::check_component(&candidate).map_err(|e| {
                StoreError::BadName(format!(
                    "no free name for `{}`: {e}",
                    names::escape_for_display(name)
                ))
            })?;
            match self.link_noreplace(dir, &candidate) {
                Ok(()) => return Ok(candidate),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(StoreError::from_io(e.into())),
            }
        }
        Err(StoreError::Exists(format!(
            "no free name for `{}` after {MAX_RENAME_TRIES} tries",
            names::escape_for_display(name)
        )))
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.store.open_uploads.fetch_sub(1, Ordering::Relaxed);
        self.store.release_space(self.space);
        if self.keep_on_drop {
            // A kept partial still takes its room.
            return;
        }
        self.store.give_back(self.reserved);
        if let (true, Temp::Staged(temp)) = (self.live, &self.temp) {
            let _ = rustix::fs::unlinkat(&self.store.staging, temp.as_str(), AtFlags::empty());
        }
    }
}

/// Bytes of the regular files under `root`, kept partials included.
fn folder_bytes(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                // Staging counts too: kept partials take room.
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// The process's umask. Reading it means setting it, so it is put back at
/// once; this runs when the store opens, before any session thread.
fn current_umask() -> u32 {
    let old = rustix::process::umask(Mode::empty());
    rustix::process::umask(old);
    old.bits()
}

/// The first `name (n)` free in `dir` right now.
fn free_name(dir: &OwnedFd, name: &str) -> Option<String> {
    (1..=MAX_RENAME_TRIES)
        .map(|n| numbered(name, n))
        .take_while(|c| names::check_component(c).is_ok())
        .find(|c| {
            matches!(
                rustix::fs::statat(dir, c.as_str(), AtFlags::SYMLINK_NOFOLLOW),
                Err(Errno::NOENT)
            )
        })
}

/// The staging name of the partial for `path` sent under `key`: hashed, so
/// any path and key give a short, plain name.
fn partial_name(path: &str, key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(path.as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    format!("{PARTIAL_PREFIX}{}", &h.finalize().to_hex()[..32])
}

/// `report.pdf` → `report (n).pdf`; `.bashrc` → `.bashrc (n)`.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Whether regular file `name` in `dir` hashes to `digest`.
/// Only a regular file of the same size is read at all, so a tiny upload
/// cannot make the server hash a huge file, and the name being swapped for
/// a FIFO cannot block it (the open does not wait, and is checked after).
fn same_content(
    dir: &OwnedFd,
    name: &str,
    size: u64,
    digest: &blake3::Hash,
) -> Result<bool, StoreError> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Gone, or swapped for something we may not open: not identical.
        Err(_) => return Ok(false),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| StoreError::Io(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size as u64 != size {
        return Ok(false);
    }
    let mut file = File::from(fd);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Io(e)),
        }
    }
    Ok(hasher.finalize() == *digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) =
            Store::open(&dir.path().join("up"), None, PARTIAL_TTL_DEFAULT).expect("open");
        (dir, store)
    }

    /// A small tmpfs mounted at a path for as long as it lives (root only).
    struct Mounted(PathBuf);

    impl Mounted {
        fn at(path: &Path) -> Option<Mounted> {
            Mounted::with(path, &["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        }

        /// Folder `source` mounted again at `path`.
        fn bind(source: &Path, path: &Path) -> Option<Mounted> {
            Mounted::with(path, &["--bind", source.to_str()?])
        }

        fn with(path: &Path, args: &[&str]) -> Option<Mounted> {
            fs::create_dir_all(path).ok()?;
            let mounted = std::process::Command::new("mount")
                .args(args)
                .arg(path)
                .output()
                .ok()?
                .status
                .success();
            mounted.then(|| Mounted(path.to_path_buf()))
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            let unmount = |args: &[&str]| {
                std::process::Command::new("umount")
                    .args(args)
                    .arg(&self.0)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            // Still busy: detach it anyway, so that no mount outlives the test.
            if !unmount(&[]) {
                unmount(&["-l"]);
            }
        }
    }

    #[test]
    fn a_bind_mount_is_told_apart_from_the_folder_but_shares_its_free_space() {
        let t = tempfile::tempdir().expect("tempdir");
        let Some(_disk) = Mounted::at(&t.path().join("disk")) else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let disk = t.path().join("disk");
        let (mut s, _) = Store::open(&disk.join("up"), None, PARTIAL_TTL_DEFAULT).expect("open");
        let Some(_bound) = Mounted::bind(&disk, &disk.join("up/bound")) else {
            eprintln!("skipped: cannot bind-mount here");
            return;
        };
        let bound = s
            .begin(&["bound", "a.bin"], 0, &mut FolderCache::default())
            .expect("begin");
        assert!(bound.beyond_root(), "another mount, though the same disk");
        drop(bound);
        // The 8 MiB disk keeps 3 MiB free: one 4 MiB upload fits, not two,
        // wherever on it they go.
        s.keep_free(3 << 20);
        let first = s
            .begin(&["bound", "b.bin"], 4 << 20, &mut FolderCache::default())
            .expect("the first fits");
        let second = s.begin(&["c.bin"], 4 << 20, &mut FolderCache::default());
        assert!(
            matches!(second, Err(StoreError::NoSpace { .. })),
            "{second:?}"
        );
        drop(first);
    }

    #[test]
    fn the_mount_of_a_descriptor_reads_the_same_from_proc_as_from_statx() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = rustix::fs::open(t.path(), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .expect("open");
        let st =
            rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).expect("statx");
        if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
            eprintln!("skipped: this kernel's statx has no mount id");
            return;
        }
        assert_eq!(mount_id_from_proc(&dir), Some(st.stx_mnt_id));
    }

    #[test]
    fn a_file_system_mounted_inside_gets_no_staged_or_resumable_uploads() {
        let (_t, mut s) = store();
        let Some(_mnt) = Mounted::at(&s.path().join("mnt")) else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let parts = ["mnt", "a.txt"];
        let up = s
            .begin(&parts, 0, &mut FolderCache::default())
            .expect("nameless files work there");
        assert!(up.beyond_root());
        drop(up);
        // A partial lives in staging, on the other file system.
        let mut folders = FolderCache::default();
        let resumed = s.begin_resumable(&["mnt", "big.bin"], &mut folders, "k", 4 << 20, 0);
        assert!(matches!(resumed, Err(StoreError::Unresumable(_))));
        drop(resumed);
        // Without O_TMPFILE nothing could keep the upload out of sight.
        s.anonymous_temp = false;
        let staged = s.begin(&["mnt", "b.txt"], 0, &mut FolderCache::default());
        assert!(matches!(staged, Err(StoreError::Unsupported(_))));
        // The folder's own file system still takes staged uploads.
        put(&s, "c.txt", b"here", OnClash::Rename).expect("stored");
    }

    fn put(store: &Store, path: &str, bytes: &[u8], policy: OnClash) -> Result<Stored, StoreError> {
        let parts = store.check_path(path)?;
        let mut up = store.begin(&parts, bytes.len() as u64, &mut FolderCache::default())?;
        up.write_all(bytes)?;
        up.commit(&parts, policy, &blake3::hash(bytes))
    }

    fn staging_is_empty(store: &Store) -> bool {
        fs::read_dir(store.path().join(STAGING_DIR))
            .expect("staging")
            .next()
            .is_none()
    }

    #[test]
    fn stores_in_nested_folders() {
        let (_t, s) = store();
        let got = put(&s, "a/b/c.txt", b"hi", OnClash::Rename).expect("stored");
        assert_eq!(got.stored_as, "a/b/c.txt");
        assert_eq!(got.clash, Clash::None);
        assert_eq!(fs::read(s.path().join("a/b/c.txt")).expect("read"), b"hi");
        assert!(staging_is_empty(&s));
    }

    #[test]
    fn clash_renames_and_never_overwrites() {
        let (_t, s) = store();
        put(&s, "report.pdf", b"one", OnClash::Rename).expect("first");
        let second = put(&s, "report.pdf", b"two", OnClash::Rename).expect("second");
        assert_eq!(second.stored_as, "report (1).pdf");
        assert_eq!(second.clash, Clash::Renamed);
        let third = put(&s, "report.pdf", b"three", OnClash::Rename).expect("third");
        assert_eq!(third.stored_as, "report (2).pdf");
        assert_eq!(fs::read(s.path().join("report.pdf")).expect("read"), b"one");
    }

    /// An overwrite passes through a second name on its way in. That name
    /// must never show in the folder: a crash between naming and renaming
    /// would leave it there for good, where start-up cleaning never looks.
    #[test]
    fn an_overwrite_never_shows_a_second_name_in_the_folder() {
        let (_t, s) = store();
        // Without O_TMPFILE an overwrite is a plain rename from staging,
        // and there is no second name to look for.
        let nameless = rustix::fs::openat(
            &s.root,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        );
        if nameless.is_err() {
            eprintln!("skipped: no O_TMPFILE here");
            return;
        }
        put(&s, "f.txt", b"first", OnClash::Rename).expect("first");
        let done = AtomicBool::new(false);
        let seen = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut seen = HashSet::new();
                while !done.load(Ordering::Relaxed) {
                    for entry in fs::read_dir(s.path()).expect("ls").flatten() {
                        seen.insert(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                seen
            });
            for i in 0..2000u32 {
                put(&s, "f.txt", &i.to_le_bytes(), OnClash::Overwrite).expect("overwrite");
            }
            done.store(true, Ordering::Relaxed);
            watcher.join().expect("watcher")
        });
        let strays: Vec<_> = seen
            .iter()
            .filter(|name| *name != STAGING_DIR && *name != "f.txt")
            .collect();
        assert!(
            strays.is_empty(),
            "{} other names seen, such as {:?}",
            strays.len(),
            &strays[..strays.len().min(3)]
        );
        assert!(staging_is_empty(&s));
    }

    #[test]
    fn overwrite_and_skip_identical() {
        let (_t, s) = store();
        put(&s, "x", b"old", OnClash::Rename).expect("first");
        let o = put(&s, "x", b"new", OnClash::Overwrite).expect("overwrite");
        assert_eq!(o.clash, Clash::Overwritten);
        assert_eq!(fs::read(s.path().join("x")).expect("read"), b"new");
        let same = put(&s, "x", b"new", OnClash::SkipIdentical).expect("same");
        assert_eq!(same.clash, Clash::Identical);
        let differ = put(&s, "x", b"other", OnClash::SkipIdentical).expect("differ");
        assert_eq!(differ.stored_as, "x (1)");
        assert!(staging_is_empty(&s));
    }

    #[test]
    fn group_commit_stores_every_file_and_resolves_clashes_in_order() {
        let (_t, s) = store();
        let batch = ["a/x.txt", "a/x.txt", "b/y.txt"]
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let bytes = format!("file {i}");
                let parts: Vec<&str> = path.split('/').collect();
                let mut upload = s
                    .begin(&parts, 0, &mut FolderCache::default())
                    .expect("begin");
                upload.write_all(bytes.as_bytes()).expect("write");
                Finished {
                    upload,
                    parts: path.split('/').map(String::from).collect(),
                    policy: OnClash::Rename,
                    digest: blake3::hash(bytes.as_bytes()),
                }
            })
            .collect();
        let via = s.sync_handle();
        s.sync(&via).expect("sync");
        let linked = s.link_group(batch);
        s.sync(&via).expect("sync");
        let stored: Vec<String> = linked
            .into_iter()
            .map(|r| r.expect("stored").stored_as)
            .collect();
        assert_eq!(stored, ["a/x.txt", "a/x (1).txt", "b/y.txt"]);
        assert_eq!(
            fs::read(s.path().join("a/x (1).txt")).expect("read"),
            b"file 1"
        );
        assert!(staging_is_empty(&s));
    }

    #[test]
    fn the_staging_folder_stands_in_where_o_tmpfile_is_missing() {
        let (_t, mut s) = store();
        s.anonymous_temp = false;
        let mut up = s
            .begin(&["a", "b.txt"], 0, &mut FolderCache::default())
            .expect("begin");
        up.write_all(b"staged").expect("write");
        assert!(!staging_is_empty(&s), "the bytes live in staging meanwhile");
        drop(up);
        assert!(staging_is_empty(&s));
        put(&s, "a/b.txt", b"one", OnClash::Rename).expect("stored");
        put(&s, "a/b.txt", b"two", OnClash::Rename).expect("renamed");
        put(&s, "a/b.txt", b"three", OnClash::Overwrite).expect("replaced");
        assert_eq!(fs::read(s.path().join("a/b.txt")).expect("read"), b"three");
        assert_eq!(
            fs::read(s.path().join("a/b (1).txt")).expect("read"),
            b"two"
        );
        assert!(staging_is_empty(&s));
    }

    #[test]
    fn dropped_upload_leaves_nothing() {
        let (_t, s) = store();
        let mut up = s
            .begin(&["partial.bin"], 0, &mut FolderCache::default())
            .expect("begin");
        up.write_all(b"partial").expect("write");
        drop(up);
        assert!(staging_is_empty(&s));
        let names: Vec<_> = fs::read_dir(s.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "only the staging folder");
    }

    #[test]
    fn leftovers_are_cleaned_at_open() {
        let t = tempfile::tempdir().expect("tempdir");
        let up = t.path().join("up");
        fs::create_dir_all(up.join(STAGING_DIR)).expect("mkdir");
        fs::write(up.join(STAGING_DIR).join("9-9.part"), b"x").expect("write");
        let (_s, cleaned) = Store::open(&up, None, PARTIAL_TTL_DEFAULT).expect("open");
        assert_eq!(cleaned, 1);
    }

    #[test]
    fn symlinks_and_files_on_the_way_are_refused() {
        let (t, s) = store();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, s.path().join("link")).expect("symlink");
        fs::write(s.path().join("file"), b"x").expect("write");
        for path in ["link/x", "file/x"] {
            let parts = s.check_path(path).expect("valid name");
            assert!(
                matches!(
                    s.begin(&parts, 0, &mut FolderCache::default()),
                    Err(StoreError::BadName(_))
                ),
                "{path}"
            );
        }
        assert!(matches!(
            s.check_path(".ferry-staging/x"),
            Err(StoreError::BadName(_))
        ));
        // The final name being a symlink is not followed: it is a clash.
        std::os::unix::fs::symlink(outside.join("target"), s.path().join("last")).expect("symlink");
        let got = put(&s, "last", b"x", OnClash::Rename).expect("stored");
        assert_eq!(got.stored_as, "last (1)");
        assert!(!outside.join("target").exists());
        assert!(fs::read_dir(&outside).expect("ls").next().is_none());
    }

    #[test]
    fn size_limits_are_checked_before_writing() {
        let t = tempfile::tempdir().expect("tempdir");
        let (s, _) = Store::open(t.path(), Some(10), PARTIAL_TTL_DEFAULT).expect("open");
        assert!(s.check_size(&[], 10).is_ok());
        assert!(matches!(
            s.check_size(&[], 11),
            Err(StoreError::TooLarge { .. })
        ));
        let (s, _) = Store::open(&t.path().join("b"), None, PARTIAL_TTL_DEFAULT).expect("open");
        assert!(matches!(
            s.check_size(&[], u64::MAX),
            Err(StoreError::NoSpace { .. })
        ));
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
        assert_eq!(numbered(".bashrc", 2), ".bashrc (2)");
        assert_eq!(numbered("noext", 3), "noext (3)");
    }
}
