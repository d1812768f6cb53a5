//! The set of paths the user picked to send.
//!
//! Marks are full paths, not rows, so they survive moving between folders
//! and one send can take files from several places. A marked folder is sent
//! whole; its size comes from background sizing once known.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::listing::{Entry, EntryKind};
use super::sizing::{FolderSizes, Sizing};

/// What is known about a marked path at the time it was marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marked {
    File {
        bytes: u64,
    },
    Folder,
    /// Not a regular file or folder; the plan will say why it is skipped.
    Other,
}

#[derive(Debug, Clone, Default)]
pub struct Marks {
    marked: BTreeMap<PathBuf, Marked>,
    /// A marked link is sent as what it points to (`-L`). Otherwise the
    /// plan skips it, and it adds nothing to the totals.
    follow_links: bool,
}

/// How much the marked set amounts to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub paths: usize,
    pub files: u64,
    pub bytes: u64,
    /// Some marked folder is still being measured: the numbers will grow.
    pub sizing: bool,
}

impl Marks {
    pub fn new(follow_links: bool) -> Marks {
        Marks {
            marked: BTreeMap::new(),
            follow_links,
        }
    }

    /// Whether `entry` is a link that a send skips (no `-L`): it adds
    /// nothing to the totals, and its row says so.
    pub fn skips(&self, entry: &Entry) -> bool {
        entry.is_link && !self.follow_links
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.marked.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.marked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marked.is_empty()
    }

    pub fn mark(&mut self, entry: &Entry) {
        let marked = match entry.kind {
            _ if self.skips(entry) => Marked::Other,
            EntryKind::File => Marked::File {
                bytes: entry.size.unwrap_or(0),
            },
            EntryKind::Folder => Marked::Folder,
            EntryKind::Other => Marked::Other,
        };
        self.marked.insert(entry.path.clone(), marked);
    }

    /// Flips the mark on `entry`; returns whether it is now marked.
    pub fn toggle(&mut self, entry: &Entry) -> bool {
        if self.marked.remove(&entry.path).is_some() {
            false
        } else {
            self.mark(entry);
            true
        }
    }

    pub fn unmark(&mut self, path: &Path) {
        self.marked.remove(path);
    }

    pub fn clear(&mut self) {
        self.marked.clear();
    }

    /// The marked paths, in a stable (sorted) order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.marked.keys().cloned().collect()
    }

    pub fn totals(&self, sizes: &FolderSizes) -> Totals {
        let mut totals = Totals {
            paths: self.marked.len(),
            ..Totals::default()
        };
        for (path, marked) in &self.marked {
            match marked {
                Marked::File { bytes } => {
                    totals.files += 1;
                    totals.bytes += bytes;
                }
                Marked::Folder => match sizes.get(path) {
                    Some(Sizing::Known(size)) => {
                        totals.files += size.files;
                        totals.bytes += size.bytes;
                    }
                    Some(Sizing::Counting(size)) => {
                        totals.files += size.files;
                        totals.bytes += size.bytes;
                        totals.sizing = true;
                    }
                    Some(Sizing::Pending) | None => totals.sizing = true,
                },
                Marked::Other => {}
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::FolderSize;

    fn entry(path: &str, kind: EntryKind, size: Option<u64>) -> Entry {
        Entry {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: PathBuf::from(path),
            kind,
            size,
            is_link: false,
            problem: None,
        }
    }

    #[test]
    fn links_count_for_nothing_unless_followed() {
        let link = |path: &str, kind, size| Entry {
            is_link: true,
            ..entry(path, kind, size)
        };
        let sizes = FolderSizes::default();
        for follow in [false, true] {
            let mut marks = Marks::new(follow);
            marks.mark(&link("/a/to-file", EntryKind::File, Some(100)));
            marks.mark(&link("/a/to-folder", EntryKind::Folder, None));
            marks.mark(&entry("/a/real.txt", EntryKind::File, Some(5)));
            let totals = marks.totals(&sizes);
            let expected = if follow {
                (3, 2, 105, true)
            } else {
                (3, 1, 5, false)
            };
            assert_eq!(
                (totals.paths, totals.files, totals.bytes, totals.sizing),
                expected,
                "following links: {follow}"
            );
        }
    }

    #[test]
    fn totals_add_files_and_known_folder_sizes() {
        let mut marks = Marks::default();
        let mut sizes = FolderSizes::default();
        marks.mark(&entry("/a/one.txt", EntryKind::File, Some(100)));
        marks.mark(&entry("/b/two.txt", EntryKind::File, Some(20)));
        marks.mark(&entry("/a/photos", EntryKind::Folder, None));
        let totals = marks.totals(&sizes);
        assert_eq!(
            (totals.paths, totals.files, totals.bytes, totals.sizing),
            (3, 2, 120, true)
        );

        sizes.update(
            PathBuf::from("/a/photos"),
            FolderSize {
                files: 5,
                bytes: 1000,
                unreadable: 0,
            },
            true,
        );
        let totals = marks.totals(&sizes);
        assert_eq!(
            (totals.files, totals.bytes, totals.sizing),
            (7, 1120, false)
        );
    }

    #[test]
    fn toggle_flips_and_marks_are_by_path() {
        let mut marks = Marks::default();
        let file = entry("/a/one.txt", EntryKind::File, Some(1));
        assert!(marks.toggle(&file));
        assert!(marks.contains(Path::new("/a/one.txt")));
        assert!(!marks.toggle(&file));
        assert!(marks.is_empty());
    }
}
