//! Folders made for uploads whose entries are not yet known to be durable.
//!
//! A folder created on an upload's path must survive a crash before any file
//! inside it is acked. Syncing its parent right away costs a journal commit
//! per new folder, on the thread that receives, while the next group commit
//! (one `syncfs` for everything) would cover it anyway. So a new folder is
//! only recorded here; a `syncfs` that starts after the record forgets it,
//! and a commit that does not use `syncfs` (a big file on its own, an empty
//! folder) first syncs the parents of every folder still recorded.
//!
//! The ledger is shared by all sessions: a file may land in a folder another
//! connection made a moment ago.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Parents of folders made since the last sync that covered them.
#[derive(Debug, Default)]
pub(crate) struct NewFolders {
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Numbers each record, so that a sync forgets only what it covered.
    next: u64,
    waiting: Vec<(u64, Arc<OwnedFd>)>,
}

/// A point in the ledger: everything recorded before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

impl NewFolders {
    /// Records that a folder was just made in `parent`.
    pub(crate) fn made_in(&self, parent: OwnedFd) {
        let mut ledger = self.lock();
        let number = ledger.next;
        ledger.next += 1;
        ledger.waiting.push((number, Arc::new(parent)));
    }

    /// Call before a `syncfs`, and pass the mark to [`NewFolders::synced`]
    /// once it succeeded.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().next)
    }

    /// A sync that started after `mark` finished: what was recorded before
    /// it is durable.
    pub(crate) fn synced(&self, mark: Mark) {
        self.lock().waiting.retain(|(number, _)| *number >= mark.0);
    }

    /// Makes every folder recorded so far durable with an fsync of each
    /// parent (another thread's `syncfs` may be covering some of them at
    /// this moment; syncing them twice is cheaper than waiting for it).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        let (mark, parents): (Mark, Vec<Arc<OwnedFd>>) = {
            let ledger = self.lock();
            let parents = ledger.waiting.iter().map(|(_, p)| Arc::clone(p)).collect();
            (Mark(ledger.next), parents)
        };
        for parent in &parents {
            rustix::fs::fsync(&**parent)?;
        }
        self.synced(mark);
        Ok(())
    }

    /// How many folders are waiting for a sync.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // The ledger stays consistent even if a holder panicked: every
        // change is a single push or retain.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn a_sync_forgets_only_what_was_recorded_before_its_mark() {
        let folders = NewFolders::default();
        let (_a, a) = dir();
        let (_b, b) = dir();
        folders.made_in(a);
        let mark = folders.mark();
        // Made while the sync runs: not covered by it.
        folders.made_in(b);
        folders.synced(mark);
        assert_eq!(folders.waiting(), 1);
    }

    #[test]
    fn sync_all_empties_the_ledger() {
        let folders = NewFolders::default();
        for _ in 0..3 {
            let (_t, fd) = dir();
            folders.made_in(fd);
        }
        folders.sync_all().expect("fsync");
        assert_eq!(folders.waiting(), 0);
    }
}
