//! Plan verdicts: what would happen to each file of a batch if it were
//! sent now (new, resumed, identical, renamed, overwritten or refused),
//! found out without changing anything.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use ferry_proto::{Clash, OnClash, PlanEntry, PlanVerdict, Verdict, path as names};
use rustix::fs::{AtFlags, FileType};

use super::clash::{free_name, hash_file, open_same_size};
use super::space::Room;
use super::staging::partial_name;
use super::{Store, StoreError};

impl Store {
    /// What would happen to each of `files` if it were sent now, changing
    /// nothing. Free space is shared out in order, so a batch that cannot
    /// all fit is told which files would not.
    pub fn verdicts(&self, files: &[PlanEntry]) -> Vec<PlanVerdict> {
        let mut digests = Digests::default();
        let verdicts = self.verdicts_with(files, &mut digests);
        if digests.files_read() > 0 {
            tracing::debug!(
                asked = files.len(),
                read = digests.files_read(),
                "plan: compared existing files"
            );
        }
        verdicts
    }

    /// [`Store::verdicts`], hashing existing files through `digests`.
    pub(super) fn verdicts_with(
        &self,
        files: &[PlanEntry],
        digests: &mut Digests,
    ) -> Vec<PlanVerdict> {
        let mut room = Room::new(self);
        files
            .iter()
            .map(|f| PlanVerdict {
                id: f.id,
                verdict: self.verdict(f, &mut room, digests),
            })
            .collect()
    }

    fn verdict(&self, f: &PlanEntry, room: &mut Room, digests: &mut Digests) -> Verdict {
        let refused = |e: StoreError| Verdict::Refused {
            code: e.code(),
            message: e.to_string(),
        };
        let path = names::canonical(&f.path);
        let parts = match self.check_path(&path) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        if let Err(e) = self.check_limit(f.size) {
            return refused(e);
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
            // Skip-identical asks first whether the bytes are there: a part
            // kept from an interrupted upload of a file the folder already
            // holds would otherwise be resumed into a second copy.
            (_, Some(FileType::RegularFile), OnClash::SkipIdentical)
                if same_as(self, dir.as_ref(), name, f, digests) =>
            {
                needed = 0;
                Verdict::Identical
            }
            (kept, existing, policy) => {
                // Where the file would land, resumed or not: a name taken
                // meanwhile is as much a clash for a resumed file.
                let taken = match (existing, policy) {
                    (None, _) => None,
                    (Some(FileType::RegularFile), OnClash::Overwrite) => {
                        Some((Clash::Overwritten, path.to_string()))
                    }
                    (Some(_), OnClash::Overwrite) => {
                        return refused(StoreError::Exists(format!(
                            "`{}` exists and is not a regular file",
                            names::escape_for_display(&path)
                        )));
                    }
                    (Some(_), _) => match dir.as_ref().and_then(|d| digests.free_name(d, name)) {
                        Some(free) => Some((Clash::Renamed, format!("{prefix}{free}"))),
                        None => {
                            return refused(StoreError::Exists(format!(
                                "no free name for `{}`",
                                names::escape_for_display(&path)
                            )));
                        }
                    },
                };
                match (kept, taken) {
                    (Some(offset), taken) => {
                        needed = f.size - offset;
                        let (clash, stored_as) = taken.unzip();
                        Verdict::Resume {
                            offset,
                            clash,
                            stored_as,
                        }
                    }
                    (None, None) => Verdict::New,
                    (None, Some((result, stored_as))) => Verdict::Clash { result, stored_as },
                }
            }
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
}

/// Existing files hashed for one plan message, by file: asking about the
/// same big file many times over in one message costs one read of it, not
/// one per entry.
#[derive(Debug, Default)]
pub(super) struct Digests {
    by_file: HashMap<(u64, u64), Option<blake3::Hash>>,
    /// How many of them were read (rather than known from an earlier plan).
    read: usize,
    /// The free numbered name found for a taken one, by folder and name:
    /// finding it can take thousands of look-ups, once per plan is enough.
    free_names: HashMap<(u64, u64, String), Option<String>>,
}

impl Digests {
    /// The first `name (n)` free in `dir`, looked for once per plan.
    fn free_name(&mut self, dir: &OwnedFd, name: &str) -> Option<String> {
        let Ok(st) = rustix::fs::fstat(dir) else {
            return free_name(dir, name);
        };
        self.free_names
            .entry((st.st_dev, st.st_ino, name.to_string()))
            .or_insert_with(|| free_name(dir, name))
            .clone()
    }

    /// How many files were read.
    pub(super) fn files_read(&self) -> usize {
        self.read
    }
}

/// Digests of existing files from earlier plans, so that asking again
/// whether an unchanged file holds something it does not (the same plan
/// sent over and over) reads it no more. A file is known by its identity
/// and its size, modification and status-change times.
#[derive(Debug, Default)]
pub(super) struct KnownDigests(Mutex<HashMap<FileVersion, blake3::Hash>>);

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns)
type FileVersion = (u64, u64, i64, i64, i64, i64, i64);

/// Files remembered at most; past that the memory starts afresh.
const KNOWN_DIGESTS: usize = 4096;

impl KnownDigests {
    fn get(&self, version: &FileVersion) -> Option<blake3::Hash> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(version)
            .copied()
    }

    fn put(&self, version: FileVersion, digest: blake3::Hash) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_DIGESTS {
            known.clear();
        }
        known.insert(version, digest);
    }
}

/// Whether regular file `name` in `dir` holds exactly what `f` says.
fn same_as(
    store: &Store,
    dir: Option<&OwnedFd>,
    name: &str,
    f: &PlanEntry,
    digests: &mut Digests,
) -> bool {
    let (Some(dir), Some(want)) = (dir, f.blake3.as_deref()) else {
        return false;
    };
    let Ok(want) = blake3::Hash::from_hex(want) else {
        return false;
    };
    let Ok(Some((file, st))) = open_same_size(dir, name, f.size) else {
        return false;
    };
    let version = (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
    );
    // Remembered from an earlier plan, a digest may only say "different":
    // some writes (through a shared mapping, say) change neither time, so
    // a remembered match is checked by reading the file again. A wrong
    // "different" costs no more than a file sent under a new name.
    if store
        .known_digests
        .get(&version)
        .is_some_and(|known| known != want)
    {
        return false;
    }
    let digest = digests
        .by_file
        .entry((st.st_dev, st.st_ino))
        .or_insert_with(|| {
            digests.read += 1;
            let digest = hash_file(file).ok()?;
            store.known_digests.put(version, digest);
            Some(digest)
        });
    *digest == Some(want)
}
