//! What happens when an upload's name is taken: keep both under a
//! numbered name, replace the old file atomically, or keep the old one
//! when it holds the same bytes.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use ferry_proto::{Clash, OnClash, path as names};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::StoreError;
use super::upload::{Temp, Upload};

/// Highest `(n)` tried when looking for a free name.
const MAX_RENAME_TRIES: u32 = 10_000;

impl Upload<'_> {
    /// `name` is taken in `dir`: applies the clash policy.
    pub(super) fn resolve_clash(
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
                // The old file's size is looked up and it is replaced as
                // one step among overwrites: two racing for one name would
                // otherwise both take the same old file off the quota.
                let _one_at_a_time = self
                    .store
                    .overwriting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
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

/// The first `name (n)` free in `dir` right now.
pub(super) fn free_name(dir: &OwnedFd, name: &str) -> Option<String> {
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

/// `report.pdf` → `report (n).pdf`; `.bashrc` → `.bashrc (n)`. A name
/// near the length limit gives up the end of its stem for the number
/// (keeping its extension, if that leaves any stem), so that a long name
/// that is taken can still be stored beside it.
pub fn numbered(name: &str, n: u32) -> String {
    let number = format!(" ({n})");
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let limit = names::MAX_COMPONENT_BYTES.saturating_sub(number.len());
    if stem.len() + ext.len() <= limit {
        return format!("{stem}{number}{ext}");
    }
    let with_ext = limit
        .checked_sub(ext.len())
        .and_then(|room| shortened(stem, room, |s| format!("{s}{number}{ext}")));
    with_ext
        .or_else(|| shortened(name, limit, |s| format!("{s}{number}")))
        // Nothing fits: the overlong name is refused where it is checked.
        .unwrap_or_else(|| format!("{stem}{number}{ext}"))
}

/// `make(start)` for the longest start of `text`, at most `max` bytes,
/// that gives an acceptable name: a cut can fall between a joiner and the
/// character it joins, which a name may not end with, so the cut backs up
/// a character at a time. `None` if no non-empty start does.
fn shortened(text: &str, max: usize, make: impl Fn(&str) -> String) -> Option<String> {
    let mut end = max.min(text.len());
    while end > 0 {
        if text.is_char_boundary(end) {
            let candidate = make(&text[..end]);
            if names::check_component(&candidate).is_ok() {
                return Some(candidate);
            }
        }
        end -= 1;
    }
    None
}

/// Whether regular file `name` in `dir` hashes to `digest`.
pub(super) fn same_content(
    dir: &OwnedFd,
    name: &str,
    size: u64,
    digest: &blake3::Hash,
) -> Result<bool, StoreError> {
    match open_same_size(dir, name, size)? {
        Some((file, _)) => Ok(hash_file(file)? == *digest),
        None => Ok(false),
    }
}

/// Regular file `name` in `dir`, open for reading, if it is `size` bytes
/// long, with its stat. Only such a file is worth hashing, so a tiny upload
/// cannot make the server hash a huge file, and the name being swapped for
/// a FIFO cannot block it (the open does not wait, and is checked after).
pub(super) fn open_same_size(
    dir: &OwnedFd,
    name: &str,
    size: u64,
) -> Result<Option<(File, rustix::fs::Stat)>, StoreError> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Gone, or swapped for something we may not open: not identical.
        Err(_) => return Ok(None),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| StoreError::Io(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size as u64 != size {
        return Ok(None);
    }
    Ok(Some((File::from(fd), st)))
}

/// The BLAKE3 of what `file` holds from where it stands.
pub(super) fn hash_file(mut file: File) -> Result<blake3::Hash, StoreError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Io(e)),
        }
    }
}
