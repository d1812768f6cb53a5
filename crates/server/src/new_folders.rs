//! Folders made for uploads whose entries are not yet known to be durable.
//!
//! A folder created on an upload's path must survive a crash before any file
//! inside it is acked. Syncing its parent right away costs a journal commit
//! per new folder, on the thread that receives, while the next group commit
//! (one `syncfs` for everything) would cover it anyway. So a new folder is
//! only recorded here. A `syncfs` that starts after the record forgets it
//! (if the folder is on the target's own file system, the only one a
//! `syncfs` of it covers). A commit that does not use `syncfs` (a big file
//! on its own, an empty folder) syncs the parents of every folder still
//! recorded before its ack.
//!
//! The ledger is shared by all sessions: a file may land in a folder another
//! connection made a moment ago, so a parent is recorded before its new
//! folder exists: a commit that finds the folder finds the record too.
//!
//! Each record holds its parent open, and only a commit clears records. A
//! client whose files never commit (aborted, cut short, refused) could
//! otherwise fill the ledger with every folder it names, until the server
//! runs out of file descriptors for good: past [`NewFolders::MAX_WAITING`]
//! parents, the folder's maker syncs the target's file system itself (one
//! `syncfs`, as a group commit would, not an fsync per parent).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::fs::Mode;
use rustix::io::Errno;

/// Parents of folders made since the last sync that covered them.
#[derive(Debug)]
pub(crate) struct NewFolders {
    ledger: Mutex<Ledger>,
    /// Held by the session making the ledger small again.
    relieving: Mutex<()>,
    /// The file system a `syncfs` of the target folder covers; folders on
    /// others (mounted inside it) wait for [`NewFolders::sync_all`].
    root_dev: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Numbers each record, so that a sync forgets only what it covered.
    next: u64,
    waiting: Vec<Waiting>,
}

/// A parent folder with new entries, recorded once however many it has.
#[derive(Debug)]
struct Waiting {
    /// The number of its newest entry.
    number: u64,
    /// Device and inode, to know the parent again.
    id: (u64, u64),
    parent: Arc<OwnedFd>,
}

/// A point in the ledger: everything recorded before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

impl NewFolders {
    /// Parents held open at most (give or take the few that sessions
    /// record at the same moment); the server keeps room for them among
    /// its own files. A tree with a folder for every few files reaches it
    /// between two group commits; each time costs one `syncfs`.
    pub(crate) const MAX_WAITING: usize = 32;

    pub(crate) fn new(root_dev: u64) -> Self {
        NewFolders {
            ledger: Mutex::default(),
            relieving: Mutex::new(()),
            root_dev,
        }
    }

    /// Makes folder `name` in `parent` and records it. Returns whether it
    /// was made (`false`: it was there already).
    ///
    /// The parent is recorded before the folder exists, so that a commit
    /// that finds the folder also finds the record, and again after, so
    /// that a sync which started in between does not forget it. The lock is
    /// not held across `mkdirat`, which a hung mount could stall.
    pub(crate) fn make(&self, parent: &OwnedFd, name: &str) -> io::Result<bool> {
        self.lock().record(parent)?;
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            // Someone else's folder; the extra record costs one fsync.
            Err(Errno::EXIST) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let waiting = {
            let mut ledger = self.lock();
            ledger.record(parent)?;
            ledger.waiting.len()
        };
        if waiting > Self::MAX_WAITING {
            self.relieve(parent)?;
        }
        Ok(true)
    }

    /// Makes the ledger small again: one `syncfs` through `via` covers
    /// every parent on the target's file system; parents on others (mounts
    /// inside it), if still too many, get an fsync each. One session at a
    /// time does it, and the others over the cap wait for it (going on
    /// would let them record without bound meanwhile); the ledger's own
    /// lock is not held across the sync.
    fn relieve(&self, via: &OwnedFd) -> io::Result<()> {
        let _one_at_a_time = self
            .relieving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.lock().waiting.len() <= Self::MAX_WAITING {
            // Another session just did it.
            return Ok(());
        }
        if rustix::fs::fstat(via)?.st_dev == self.root_dev {
            let mark = self.mark();
            rustix::fs::syncfs(via)?;
            self.synced(mark);
        }
        if self.lock().waiting.len() > Self::MAX_WAITING {
            self.sync_all()?;
        }
        Ok(())
    }

    /// Call before a `syncfs`, and pass the mark to [`NewFolders::synced`]
    /// once it succeeded.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().next)
    }

    /// A sync that started after `mark` finished: what was recorded before
    /// it is durable.
    pub(crate) fn synced(&self, mark: Mark) {
        let root_dev = self.root_dev;
        self.lock()
            .waiting
            .retain(|w| w.number >= mark.0 || w.id.0 != root_dev);
    }

    /// Makes every folder recorded so far durable with an fsync of each
    /// parent (another thread's `syncfs` may be covering some of them at
    /// this moment; syncing them twice is cheaper than waiting for it).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        let (mark, parents): (Mark, Vec<Arc<OwnedFd>>) = {
            let ledger = self.lock();
            let parents = ledger
                .waiting
                .iter()
                .map(|w| Arc::clone(&w.parent))
                .collect();
            (Mark(ledger.next), parents)
        };
        for parent in &parents {
            rustix::fs::fsync(&**parent)?;
        }
        // Each was synced itself, whatever its file system.
        self.lock().waiting.retain(|w| w.number >= mark.0);
        Ok(())
    }

    /// How many folders are waiting for a sync.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    #[cfg(test)]
    fn made_in(&self, parent: &OwnedFd) {
        self.lock().record(parent).expect("recorded");
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // The ledger stays consistent even if a holder panicked: every
        // change is a single push or retain.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ledger {
    /// Records a new entry in `parent`. A parent already waiting keeps its
    /// one record, renumbered: a sync under way may have started before
    /// this entry was made, and must not forget it.
    fn record(&mut self, parent: &OwnedFd) -> Result<(), Errno> {
        let stat = rustix::fs::fstat(parent)?;
        let id = (stat.st_dev, stat.st_ino);
        let number = self.next;
        self.next += 1;
        match self.waiting.iter_mut().find(|w| w.id == id) {
            Some(known) => known.number = number,
            None => self.waiting.push(Waiting {
                number,
                id,
                parent: Arc::new(rustix::io::dup(parent)?),
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, OwnedFd) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let fd = std::fs::File::open(tmp.path()).expect("open").into();
        (tmp, fd)
    }

    /// A ledger whose syncs cover the file system temp folders are on.
    fn ledger() -> NewFolders {
        let (_t, fd) = dir();
        NewFolders::new(rustix::fs::fstat(&fd).expect("fstat").st_dev)
    }

    #[test]
    fn a_sync_forgets_only_what_was_recorded_before_its_mark() {
        let folders = ledger();
        let (_a, a) = dir();
        let (_b, b) = dir();
        folders.made_in(&a);
        let mark = folders.mark();
        // Made while the sync runs: not covered by it.
        folders.made_in(&b);
        folders.synced(mark);
        assert_eq!(folders.waiting(), 1);
    }

    #[test]
    fn a_parent_is_recorded_once_and_a_later_entry_outlives_an_earlier_sync() {
        let folders = ledger();
        let (_t, parent) = dir();
        assert!(folders.make(&parent, "one").expect("made"));
        assert!(!folders.make(&parent, "one").expect("there already"));
        let mark = folders.mark();
        // A second new entry in the same parent while that sync runs.
        assert!(folders.make(&parent, "two").expect("made"));
        assert_eq!(folders.waiting(), 1, "one record per parent");
        folders.synced(mark);
        assert_eq!(folders.waiting(), 1, "the sync may have missed `two`");
    }

    #[test]
    fn folders_on_another_file_system_outlive_a_sync_of_this_one() {
        let (_t, fd) = dir();
        let dev = rustix::fs::fstat(&fd).expect("fstat").st_dev;
        // As if the target folder were on some other device.
        let folders = NewFolders::new(dev.wrapping_add(1));
        folders.made_in(&fd);
        folders.synced(folders.mark());
        assert_eq!(folders.waiting(), 1);
        folders.sync_all().expect("fsync");
        assert_eq!(folders.waiting(), 0);
    }

    #[test]
    fn the_ledger_holds_a_bounded_number_of_parents_open() {
        let (_tmp, root) = dir();
        let folders = NewFolders::new(rustix::fs::fstat(&root).expect("stat").st_dev);
        for i in 0..(NewFolders::MAX_WAITING * 3) {
            let name = format!("p{i}");
            folders.make(&root, &name).expect("parent made");
            let parent = rustix::fs::openat(
                &root,
                name.as_str(),
                rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
                Mode::empty(),
            )
            .expect("open parent");
            folders.make(&parent, "child").expect("child made");
            assert!(folders.waiting() <= NewFolders::MAX_WAITING, "at {i}");
        }
    }

    #[test]
    fn sync_all_empties_the_ledger() {
        let folders = ledger();
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (t, fd) = dir();
            folders.made_in(&fd);
            keep.push(t);
        }
        folders.sync_all().expect("fsync");
        assert_eq!(folders.waiting(), 0);
    }
}
