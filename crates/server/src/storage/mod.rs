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
//!
//! Its parts: `upload` (one upload, from a nameless file to its name),
//! `clash` (when that name is taken), `folders` (walking there, and
//! mounts inside the target), `space` (quota and free space),
//! `staging` (partials kept for resuming) and `verdicts` (what a plan
//! would do, changing nothing). This file holds the store itself and its
//! group syncs.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_proto::{Clash, ErrorCode, OnClash, path as names};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use thiserror::Error;

use self::folders::{mount_id, open_dir_nofollow};
use self::verdicts::KnownDigests;
use crate::new_folders::NewFolders;

mod clash;
mod folders;
mod space;
mod staging;
mod upload;
mod verdicts;

pub use clash::numbered;
pub use folders::FolderCache;
pub use upload::{DIRECT_ALIGN, Destination, Reservation, Upload, aligned_start};

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

/// Why storing failed; each maps onto a wire error code.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    BadName(String),
    #[error("declared size {size} is over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// `needed` is 0 when the disk filled up under a write (nothing was
    /// known to be short beforehand).
    #[error("{}", no_space(*needed, *available))]
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

fn no_space(needed: u64, available: u64) -> String {
    if needed == 0 {
        "not enough space: the disk filled up".to_string()
    } else {
        format!("not enough space: {needed} bytes needed, {available} available")
    }
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
    /// Held while an overwrite looks up the old file and replaces it.
    overwriting: Mutex<()>,
    /// Digests of existing files that plans compared, while unchanged.
    known_digests: KnownDigests,
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
        let staging = open_dir_nofollow(&root, STAGING_DIR).map_err(|e| {
            // Say which folder: the target itself is one.
            io::Error::new(
                e.kind(),
                format!(
                    "{STAGING_DIR} in it must be a folder of its own, not a file or a \
                     symlink: {e}"
                ),
            )
        })?;
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
            overwriting: Mutex::new(()),
            known_digests: KnownDigests::default(),
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
}

/// The process's umask. Reading it means setting it, so it is put back at
/// once; this runs when the store opens, before any session thread.
fn current_umask() -> u32 {
    let old = rustix::process::umask(Mode::empty());
    rustix::process::umask(old);
    old.bits()
}

#[cfg(test)]
mod tests;
