//! Walking to an upload's folder, and telling where it is.
//!
//! Every step opens the next folder relative to the last with
//! `O_NOFOLLOW`, so a symlink anywhere on the way is refused and a folder
//! swapped for one mid-walk cannot redirect it. A folder can be on another
//! mount than the target (a file system or bind mount inside it), which
//! changes how uploads there are staged, synced and counted ([`Place`]).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::path as names;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

use super::{Store, StoreError};

impl Store {
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

    /// Like the walk an upload makes, but creating nothing: `None` when a
    /// folder on the way does not exist yet.
    pub(super) fn walk_existing(&self, parts: &[&str]) -> Result<Option<OwnedFd>, StoreError> {
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

    /// The deepest of `folders` (a path below the root) that exists now.
    /// Whatever is created below it lands on its file system.
    pub(super) fn deepest_existing(&self, folders: &[&str]) -> io::Result<OwnedFd> {
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

    /// Whether `dir` is on another mount than the target folder: another
    /// file system mounted inside it, or another mount of the same one (a
    /// bind mount). Nothing can be linked or renamed there from the staging
    /// folder, and the store's syncs may not cover it.
    pub(super) fn is_beyond_root(&self, dir: &impl AsFd) -> io::Result<bool> {
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
pub(super) fn mount_id(fd: &impl AsFd) -> Option<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok();
    if let Some(st) = st.filter(|st| st.stx_mask & StatxFlags::MNT_ID.bits() != 0) {
        return Some(st.stx_mnt_id);
    }
    mount_id_from_proc(fd)
}

pub(super) fn mount_id_from_proc(fd: &impl AsFd) -> Option<u64> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))
        .and_then(|id| id.trim().parse().ok())
}

pub(super) fn open_dir_nofollow(dir: &impl AsFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The folder the last upload of a session went to, kept open: files of one
/// folder usually arrive together, and walking from the root for each costs
/// an open and a close per component.
///
/// A handle keeps pointing at its folder wherever the folder goes, so the
/// cache checks that the path still leads to it, with one `openat2` that
/// refuses symlinks and `..` on the way, when it was last checked more than
/// [`RECHECK_AFTER`] ago. A folder moved out of the target (archived while
/// a client still sends to it) or deleted is then walked to afresh, by its
/// path inside the target; where `openat2` is missing (Linux before 5.6),
/// every upload walks. Checking for every file cost 7% of the time of
/// 10,000 small files in memory; and a file announced just before a move
/// is linked into the folder where it went anyway, as the group it is in
/// is committed up to 200 ms later.
#[derive(Debug, Default)]
pub struct FolderCache {
    last: Option<Cached>,
}

#[derive(Debug)]
struct Cached {
    parts: Vec<String>,
    folder: Folder,
    /// The folder's device and inode, to tell it from another one since
    /// made at the same path.
    id: (u64, u64),
    /// When the path was last seen to lead to it.
    checked: Instant,
}

/// How long the cache trusts a folder to be where it was last seen.
pub(super) const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// A folder uploads go to.
#[derive(Debug, Clone)]
pub(super) struct Folder {
    pub(super) dir: Arc<OwnedFd>,
    pub(super) place: Place,
}

/// Where a folder is, seen from the target folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
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
    pub(super) fn open(&mut self, store: &Store, folders: &[&str]) -> Result<Folder, StoreError> {
        if let Some(cached) = &mut self.last
            && cached
                .parts
                .iter()
                .map(String::as_str)
                .eq(folders.iter().copied())
        {
            let now = Instant::now();
            if now.duration_since(cached.checked) < RECHECK_AFTER {
                return Ok(cached.folder.clone());
            }
            if store.still_at(folders, cached.id) {
                cached.checked = now;
                return Ok(cached.folder.clone());
            }
        }
        let dir = store.walk(folders)?;
        let place = store.place_of(&dir).map_err(StoreError::Io)?;
        let id = file_id(&dir).map_err(StoreError::Io)?;
        let folder = Folder {
            dir: Arc::new(dir),
            place,
        };
        self.last = Some(Cached {
            parts: folders.iter().map(|f| f.to_string()).collect(),
            folder: folder.clone(),
            id,
            checked: Instant::now(),
        });
        Ok(folder)
    }
}

impl Store {
    /// Whether `folders` (a path below the target) leads, with no symlink
    /// and no `..` on the way, to the folder whose device and inode are `id`.
    fn still_at(&self, folders: &[&str], id: (u64, u64)) -> bool {
        if folders.is_empty() {
            return true;
        }
        let path = folders.join("/");
        let found = rustix::fs::openat2(
            &self.root,
            path.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        );
        found.is_ok_and(|dir| file_id(&dir).is_ok_and(|now| now == id))
    }
}

/// A file's device and inode.
fn file_id(fd: &impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}
