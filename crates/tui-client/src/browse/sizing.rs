//! Measuring folders without making anyone wait.
//!
//! One worker thread walks folders and reports as it goes, so a huge tree
//! shows a growing size instead of a frozen screen. Two queues: folders the
//! user marked (their totals matter now) go first and always finish; the
//! folders of the list being looked at are measured when there is time,
//! and that work is dropped as soon as the user moves to another folder.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use walkdir::WalkDir;

/// How often a long walk reports its running count.
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// How many entries a walk looks at between checks that it is still wanted.
const CHECK_EVERY: usize = 256;

/// What a folder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderSize {
    pub files: u64,
    pub bytes: u64,
    /// Entries that could not be read: the real size may be larger.
    pub unreadable: u64,
}

/// What is known about one folder's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// Asked for, not started.
    Pending,
    /// Being walked; this much so far.
    Counting(FolderSize),
    Known(FolderSize),
}

/// Sizes by folder path, as reported by the [`Sizer`].
#[derive(Debug, Clone, Default)]
pub struct FolderSizes {
    sizes: HashMap<PathBuf, Sizing>,
    /// Asked for as urgent work, which the sizer always finishes.
    urgent: HashSet<PathBuf>,
}

impl FolderSizes {
    pub fn get(&self, path: &Path) -> Option<&Sizing> {
        self.sizes.get(path)
    }

    /// Notes that `path` is to be measured in the background; false when
    /// anything is known or asked for already, so it is not asked twice.
    pub fn request(&mut self, path: &Path) -> bool {
        if self.sizes.contains_key(path) {
            return false;
        }
        self.sizes.insert(path.to_path_buf(), Sizing::Pending);
        true
    }

    /// Notes that `path` is to be measured before anything else; false when
    /// its size is known or already asked for urgently. A folder that is
    /// only background work so far is asked for again: it may be far down
    /// the background queue, and that work may be dropped.
    pub fn request_urgent(&mut self, path: &Path) -> bool {
        if matches!(self.sizes.get(path), Some(Sizing::Known(_))) || self.urgent.contains(path) {
            return false;
        }
        self.sizes
            .entry(path.to_path_buf())
            .or_insert(Sizing::Pending);
        self.urgent.insert(path.to_path_buf());
        true
    }

    pub fn update(&mut self, path: PathBuf, size: FolderSize, complete: bool) {
        let sizing = if complete {
            self.urgent.remove(&path);
            Sizing::Known(size)
        } else {
            Sizing::Counting(size)
        };
        self.sizes.insert(path, sizing);
    }

    /// Forgets a background size that will not be finished, so that it is
    /// asked for again the next time the folder is shown.
    pub fn forget_unfinished(&mut self, path: &Path) {
        let known = matches!(self.sizes.get(path), Some(Sizing::Known(_)));
        if !known && !self.urgent.contains(path) {
            self.sizes.remove(path);
        }
    }

    /// Forgets what is known of `path`, so that it is measured again the
    /// next time it is asked for. A walk asked for urgently is left to end.
    pub fn forget(&mut self, path: &Path) {
        if !self.urgent.contains(path) {
            self.sizes.remove(path);
        }
    }

    /// Forgets every unfinished background size: the sizer drops that work
    /// when the user changes folder.
    pub fn forget_unfinished_background(&mut self) {
        let urgent = &self.urgent;
        self.sizes
            .retain(|path, sizing| matches!(sizing, Sizing::Known(_)) || urgent.contains(path));
    }
}

/// What the sizer says about a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeReport {
    /// The size so far (`complete: false`) or final.
    Measured {
        path: PathBuf,
        size: FolderSize,
        complete: bool,
    },
    /// The walk was dropped before it finished.
    Dropped { path: PathBuf },
}

#[derive(Default)]
struct Queue {
    urgent: VecDeque<PathBuf>,
    background: VecDeque<PathBuf>,
    /// Bumped whenever the background queue is replaced, so that a walk of
    /// an older batch knows to stop.
    generation: u64,
    closed: bool,
}

/// The handle to the sizing thread; dropping it stops the thread after its
/// current walk step.
pub struct Sizer {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

impl Sizer {
    /// Starts the worker. `report` returns false once nobody listens, which
    /// also ends the worker.
    pub fn spawn(
        follow_links: bool,
        report: impl Fn(SizeReport) -> bool + Send + 'static,
    ) -> Sizer {
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let worker = Arc::clone(&shared);
        thread::spawn(move || work(&worker, follow_links, &report));
        Sizer { shared }
    }

    /// Measures `path` before any background work, and to the end.
    pub fn urgent(&self, path: PathBuf) {
        self.with_queue(|q| q.urgent.push_back(path));
    }

    /// Replaces the background work with `paths`.
    pub fn background(&self, paths: Vec<PathBuf>) {
        self.with_queue(|q| {
            q.background = paths.into();
            q.generation += 1;
        });
    }

    fn with_queue(&self, change: impl FnOnce(&mut Queue)) {
        let (queue, wake) = &*self.shared;
        change(&mut queue.lock().unwrap_or_else(PoisonError::into_inner));
        wake.notify_one();
    }
}

impl Drop for Sizer {
    fn drop(&mut self) {
        self.with_queue(|q| q.closed = true);
    }
}

fn work(shared: &(Mutex<Queue>, Condvar), follow_links: bool, report: &dyn Fn(SizeReport) -> bool) {
    let (queue, wake) = shared;
    loop {
        // Some(generation) for background work, None for urgent work.
        let (path, generation) = {
            let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if q.closed {
                    return;
                }
                if let Some(path) = q.urgent.pop_front() {
                    break (path, None);
                }
                if let Some(path) = q.background.pop_front() {
                    break (path, Some(q.generation));
                }
                q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let still_wanted = || {
            let q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            !q.closed && generation.is_none_or(|g| g == q.generation)
        };
        let mut send_partial = |size: FolderSize| {
            report(SizeReport::Measured {
                path: path.clone(),
                size,
                complete: false,
            })
        };
        let listening = match measure(&path, follow_links, &still_wanted, &mut send_partial) {
            Some(size) => report(SizeReport::Measured {
                path,
                size,
                complete: true,
            }),
            None => report(SizeReport::Dropped { path }),
        };
        if !listening {
            return;
        }
    }
}

/// Walks `root`; None if it stopped being wanted before the end.
fn measure(
    root: &Path,
    follow_links: bool,
    still_wanted: &dyn Fn() -> bool,
    partial: &mut dyn FnMut(FolderSize) -> bool,
) -> Option<FolderSize> {
    let mut size = FolderSize::default();
    let mut last_report = Instant::now();
    for (seen, entry) in WalkDir::new(root)
        .follow_links(follow_links)
        .into_iter()
        .enumerate()
    {
        if seen % CHECK_EVERY == 0 && !still_wanted() {
            return None;
        }
        match entry {
            Ok(entry) if entry.file_type().is_file() => match entry.metadata() {
                Ok(meta) => {
                    size.files += 1;
                    size.bytes += meta.len();
                }
                Err(_) => size.unreadable += 1,
            },
            Ok(_) => {}
            Err(_) => size.unreadable += 1,
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            if !partial(size) {
                return None;
            }
        }
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc;

    #[test]
    fn measure_counts_files_and_bytes_in_the_whole_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join("a/one"), [0u8; 10]).expect("write");
        fs::write(dir.path().join("a/b/two"), [0u8; 5]).expect("write");
        fs::write(dir.path().join("three"), [0u8; 1]).expect("write");
        let size = measure(dir.path(), false, &|| true, &mut |_| true).expect("finished");
        assert_eq!((size.files, size.bytes, size.unreadable), (3, 16, 0));
    }

    #[test]
    fn measure_stops_when_no_longer_wanted() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(measure(dir.path(), false, &|| false, &mut |_| true).is_none());
    }

    #[test]
    fn worker_reports_urgent_sizes_through_the_callback() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), [0u8; 7]).expect("write");
        let (tx, rx) = mpsc::channel();
        let sizer = Sizer::spawn(false, move |r| tx.send(r).is_ok());
        sizer.urgent(dir.path().to_path_buf());
        let report = rx.recv_timeout(Duration::from_secs(10)).expect("a report");
        assert_eq!(
            report,
            SizeReport::Measured {
                path: dir.path().to_path_buf(),
                size: FolderSize {
                    files: 1,
                    bytes: 7,
                    unreadable: 0
                },
                complete: true
            }
        );
    }

    #[test]
    fn unfinished_background_sizes_are_forgotten_but_known_and_urgent_ones_stay() {
        let mut sizes = FolderSizes::default();
        assert!(sizes.request(Path::new("/a")));
        assert!(!sizes.request(Path::new("/a")));
        sizes.update(PathBuf::from("/b"), FolderSize::default(), true);
        assert!(sizes.request_urgent(Path::new("/c")));
        assert!(!sizes.request_urgent(Path::new("/c")));
        assert!(!sizes.request_urgent(Path::new("/b")), "already known");
        sizes.update(PathBuf::from("/c"), FolderSize::default(), false);
        sizes.forget_unfinished_background();
        assert!(sizes.get(Path::new("/a")).is_none());
        assert!(sizes.get(Path::new("/b")).is_some());
        assert!(sizes.get(Path::new("/c")).is_some());
        sizes.forget_unfinished(Path::new("/c"));
        assert!(
            sizes.get(Path::new("/c")).is_some(),
            "urgent work always finishes"
        );
        assert!(sizes.request(Path::new("/d")));
        sizes.forget_unfinished(Path::new("/d"));
        assert!(sizes.get(Path::new("/d")).is_none());
    }
}
