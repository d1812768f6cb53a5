//! One upload, from a nameless file to its name.
//!
//! Bytes go to an `O_TMPFILE` in the folder the upload is headed for (or a
//! staged file where that is missing); committing makes them durable and
//! links them into place. Whatever is dropped uncommitted leaves nothing.

use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_proto::{Clash, OnClash, path as names};
use rustix::fs::{Advice, AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::folders::{Folder, FolderCache, Place};
use super::{SPACE_CHECK_MIN, Store, StoreError, Stored};

impl Store {
    /// Starts an upload headed for `parts` (checked by [`Store::check_path`]):
    /// walks to its folder, creating folders as needed and refusing files
    /// and symlinks on the way, and opens a nameless file there.
    pub fn begin(
        &self,
        parts: &[&str],
        size: u64,
        folders_seen: &mut FolderCache,
    ) -> Result<Upload<'_>, StoreError> {
        let destination = self.destination(parts, folders_seen)?;
        let reservation = self.reserve(&destination, size)?;
        self.open_upload(&destination, parts, reservation)
    }

    /// The first step of [`Store::begin`]: walks to the folder an upload
    /// headed for `parts` goes to, creating folders as needed.
    pub fn destination(
        &self,
        parts: &[&str],
        folders_seen: &mut FolderCache,
    ) -> Result<Destination, StoreError> {
        let (_, folders) = parts
            .split_last()
            .ok_or_else(|| StoreError::BadName("empty".into()))?;
        folders_seen.open(self, folders).map(Destination)
    }

    /// The second step: holds disk space and quota for `size` bytes headed
    /// for `destination`, so that uploads running side by side cannot both
    /// pass a limit only one fits under. What lands on a file system
    /// mounted inside is checked against that one and promises nothing of
    /// the target's (a bind mount is the target's).
    pub fn reserve(
        &self,
        destination: &Destination,
        size: u64,
    ) -> Result<Reservation<'_>, StoreError> {
        let Folder { dir, place } = &destination.0;
        let space = if *place == Place::OtherDisk {
            if size >= SPACE_CHECK_MIN || self.min_free > 0 {
                self.check_room_on(dir, size)?;
            }
            0
        } else {
            self.hold_space(size)?
        };
        // Held from here on, so a refusal below gives the space back.
        let mut reservation = Reservation {
            store: self,
            space,
            quota: 0,
        };
        reservation.quota = self.take_quota(size)?;
        Ok(reservation)
    }

    /// The last step: opens a nameless file in `destination` (found for
    /// `parts`), which takes over `reservation`. This step and the ones
    /// before need not run on the same thread.
    pub fn open_upload<S: AsRef<str>>(
        &self,
        destination: &Destination,
        parts: &[S],
        mut reservation: Reservation<'_>,
    ) -> Result<Upload<'_>, StoreError> {
        let Folder { dir, place } = destination.0.clone();
        let folders = parts.split_last().map_or(&[][..], |(_, folders)| folders);
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
                let shown: Vec<&str> = folders.iter().map(AsRef::as_ref).collect();
                return Err(StoreError::Unsupported(format!(
                    "`{}` is on a file system mounted inside the upload folder that cannot \
                     hold nameless files (O_TMPFILE)",
                    names::escape_for_display(&shown.join("/"))
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
        self.open_uploads.fetch_add(1, Ordering::Relaxed);
        // The upload gives back what it holds when dropped.
        let (space, reserved) = reservation.hand_over();
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
            kept: 0,
            reserved,
            space,
            mode: 0o644 & !self.umask,
            direct: Direct::Off,
        })
    }
}

/// The folder an upload goes to, walked to (and created) but not yet
/// written in: see [`Store::destination`].
#[derive(Debug, Clone)]
pub struct Destination(Folder);

/// Disk space and quota held for an upload not yet opened; given back when
/// dropped (see [`Store::reserve`]).
#[derive(Debug)]
pub struct Reservation<'s> {
    store: &'s Store,
    space: u64,
    quota: u64,
}

impl Reservation<'_> {
    /// What is held, for an upload to take over: nothing is left to give
    /// back on drop.
    fn hand_over(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.space),
            std::mem::take(&mut self.quota),
        )
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.store.release_space(self.space);
        self.store.give_back(self.quota);
    }
}

/// One upload in progress. Dropping it without [`Upload::commit`] leaves
/// nothing behind.
#[derive(Debug)]
pub struct Upload<'s> {
    pub(super) store: &'s Store,
    pub(super) file: File,
    /// The folder the file is headed for.
    pub(super) dir: Arc<OwnedFd>,
    /// Whether that folder is on another file system (see [`Folder`]).
    pub(super) beyond_root: bool,
    pub(super) temp: Temp,
    /// Whether the temporary file still needs cleaning up on drop.
    pub(super) live: bool,
    /// A partial kept for resuming stays when the upload is dropped.
    pub(super) keep_on_drop: bool,
    /// Bytes counted against the quota for this upload.
    pub(super) reserved: u64,
    /// Disk space promised to this upload while it runs.
    pub(super) space: u64,
    /// The permission bits the file has now.
    pub(super) mode: u32,
    /// Bytes written so far, and how many of them were handed to writeback.
    pub(super) written: u64,
    pub(super) flushed: u64,
    /// Bytes of a resumed partial that were there before this upload began
    /// (counted against the quota when they arrived).
    pub(super) kept: u64,
    /// How the file is written now (see [`Upload::write_chunk`]).
    pub(super) direct: Direct,
}

/// Whether an upload's writes go around the page cache (`O_DIRECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direct {
    Off,
    On,
    /// The file system refused it (tmpfs does): never tried again.
    Refused,
}

/// What `O_DIRECT` needs lined up: the buffer's address, its length and
/// the file offset. 4 KiB covers the logical block size of every disk in
/// use; a 512-byte one is lined up by it too.
pub const DIRECT_ALIGN: usize = 4096;

/// Where in `buffer` the first [`DIRECT_ALIGN`]-aligned byte is.
pub fn aligned_start(buffer: &[u8]) -> usize {
    (DIRECT_ALIGN - buffer.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN
}

/// How many freshly written bytes are handed to the disk at a time while a
/// big upload is still arriving, so the final sync finds little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Where an upload's bytes live until it is committed.
#[derive(Debug)]
pub(super) enum Temp {
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

    /// Appends a chunk of a big body, around the page cache when the chunk
    /// and the offset are lined up for it ([`DIRECT_ALIGN`]).
    ///
    /// Written through the page cache, each byte is copied once more and
    /// lands in fresh pages, which a virtual machine whose host takes back
    /// idle memory has to fault in again: by hand on such a host, 1 GiB
    /// took 0.67-0.84 s with `O_DIRECT` and 1.3-3.9 s through the cache
    /// and one fsync. The final fsync is still what makes it durable (the
    /// disk's own cache), and an unaligned tail goes through the cache.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let aligned = |n: usize| n.is_multiple_of(DIRECT_ALIGN);
        let lined_up = aligned(bytes.as_ptr() as usize)
            && aligned(bytes.len())
            && self.written.is_multiple_of(DIRECT_ALIGN as u64);
        if !lined_up || self.direct == Direct::Refused {
            if self.direct == Direct::On {
                self.set_direct(false);
            }
            return self.write_all(bytes);
        }
        if self.direct == Direct::Off && !self.set_direct(true) {
            return self.write_all(bytes);
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write(&bytes[done..]) {
                Ok(0) => return Err(StoreError::from_io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    done += n;
                    self.written += n as u64;
                    self.flushed = self.written;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A file system that takes the flag but not the write (or
                // a device with a bigger block), or a short write that left
                // the rest unaligned: the cache, from here on.
                Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    self.set_direct(false);
                    self.direct = Direct::Refused;
                    return self.write_all(&bytes[done..]);
                }
                Err(e) => return Err(StoreError::from_io(e)),
            }
        }
        Ok(())
    }

    /// Turns `O_DIRECT` on or off; false when the file system refuses.
    fn set_direct(&mut self, on: bool) -> bool {
        let changed = rustix::fs::fcntl_getfl(&self.file).and_then(|flags| {
            let flags = if on {
                flags | OFlags::DIRECT
            } else {
                flags - OFlags::DIRECT
            };
            rustix::fs::fcntl_setfl(&self.file, flags)
        });
        match changed {
            Ok(()) => {
                self.direct = if on { Direct::On } else { Direct::Off };
                true
            }
            Err(_) => {
                self.direct = Direct::Refused;
                false
            }
        }
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
    pub(super) fn place(
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

    /// Gives the upload the name `name` in `dir`, failing with `EXIST`
    /// rather than replacing anything.
    pub(super) fn link_noreplace(&mut self, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
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
    pub(super) fn link_anonymous(&self, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
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
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.store.open_uploads.fetch_sub(1, Ordering::Relaxed);
        self.store.release_space(self.space);
        if self.keep_on_drop && self.written == 0 {
            // Nothing arrived, ever: nothing worth keeping, and a crowd of
            // such uploads would otherwise leave an empty file each.
            self.keep_on_drop = false;
        }
        if self.keep_on_drop {
            // A kept partial takes the room of what arrived; what was
            // counted for the rest of the file, which never came, is given
            // back.
            let arrived = self.written.saturating_sub(self.kept);
            self.store.give_back(self.reserved.saturating_sub(arrived));
            return;
        }
        self.store.give_back(self.reserved);
        if let (true, Temp::Staged(temp)) = (self.live, &self.temp) {
            let unlinked =
                rustix::fs::unlinkat(&self.store.staging, temp.as_str(), AtFlags::empty());
            if unlinked.is_ok() {
                // A resumed partial's older bytes go with it.
                self.store.give_back(self.kept);
            }
        }
    }
}
