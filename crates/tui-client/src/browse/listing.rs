//! One folder as the picker shows it: folders first, then files, each in
//! alphabetical order, with hidden entries and a filter applied on top.
//!
//! The folder is read once ([`read_entries`]); hiding, filtering and moving
//! the cursor only change which of those entries are visible, so they cost
//! no file system work and can never fail.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::describe_error;
use crate::order::natural;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder, or a symlink to one (it can be opened like a folder).
    Folder,
    File,
    /// Anything else: sockets, devices, broken links, unreadable entries.
    Other,
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name for display; not valid UTF-8 is shown with replacement
    /// characters (the real name is in `path`).
    pub name: String,
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Bytes, for files.
    pub size: Option<u64>,
    pub is_link: bool,
    /// Why the entry could not be looked at, in plain words.
    pub problem: Option<String>,
}

impl Entry {
    /// Looks at one path; never fails, a problem is kept on the entry.
    pub fn inspect(path: PathBuf) -> Entry {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut entry = Entry {
            name,
            path,
            kind: EntryKind::Other,
            size: None,
            is_link: false,
            problem: None,
        };
        let meta = match fs::symlink_metadata(&entry.path) {
            Ok(m) => m,
            Err(e) => {
                entry.problem = Some(describe_error(&e));
                return entry;
            }
        };
        let meta = if meta.file_type().is_symlink() {
            entry.is_link = true;
            match fs::metadata(&entry.path) {
                Ok(target) => target,
                Err(_) => {
                    entry.problem = Some("broken link".into());
                    return entry;
                }
            }
        } else {
            meta
        };
        if meta.is_dir() {
            entry.kind = EntryKind::Folder;
        } else if meta.is_file() {
            entry.kind = EntryKind::File;
            entry.size = Some(meta.len());
        }
        entry
    }

    pub fn is_folder(&self) -> bool {
        self.kind == EntryKind::Folder
    }

    pub fn is_hidden(&self) -> bool {
        self.name.starts_with('.')
    }
}

/// Reads the entries of `dir`, in no particular order. Entries that cannot
/// be inspected are still returned, with their problem.
pub fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    // An entry the OS cannot even name cannot be shown or sent: left out.
    for item in fs::read_dir(dir)?.flatten() {
        entries.push(Entry::inspect(item.path()));
    }
    Ok(entries)
}

/// The entries of one folder plus the view over them.
#[derive(Debug, Clone)]
pub struct Listing {
    dir: PathBuf,
    /// All entries, sorted.
    entries: Vec<Entry>,
    show_hidden: bool,
    filter: String,
    /// Indices into `entries` of what is shown, in order.
    visible: Vec<usize>,
    /// Index into `visible`.
    cursor: usize,
    /// First visible row on screen; kept here so the view scrolls only when
    /// the cursor leaves it, like every other file manager.
    offset: usize,
    /// How many rows the screen has for the list.
    rows: usize,
    /// Whether `entries` came from reading the folder, rather than being
    /// the stand-in of one not read (yet, or at all).
    read: bool,
}

impl Listing {
    pub fn new(dir: PathBuf, mut entries: Vec<Entry>, show_hidden: bool) -> Self {
        entries.sort_by(compare_entries);
        let mut listing = Listing {
            dir,
            entries,
            show_hidden,
            filter: String::new(),
            visible: Vec::new(),
            cursor: 0,
            offset: 0,
            rows: 20,
            read: true,
        };
        listing.refresh();
        listing
    }

    /// A folder whose content is not known yet (or could not be read).
    pub fn empty(dir: PathBuf) -> Self {
        Listing {
            read: false,
            ..Listing::new(dir, Vec::new(), false)
        }
    }

    /// Whether the entries are the folder's, as read; not so for the
    /// stand-in of [`Listing::empty`].
    pub fn is_read(&self) -> bool {
        self.read
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn visible(&self) -> impl Iterator<Item = &Entry> {
        self.visible.iter().map(|&i| &self.entries[i])
    }

    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    /// Entries hidden because their name starts with a dot.
    pub fn hidden_count(&self) -> usize {
        if self.show_hidden {
            0
        } else {
            self.entries.iter().filter(|e| e.is_hidden()).count()
        }
    }

    pub fn current(&self) -> Option<&Entry> {
        self.visible.get(self.cursor).map(|&i| &self.entries[i])
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn set_rows(&mut self, rows: usize) {
        self.rows = rows.max(1);
        self.keep_cursor_in_view();
    }

    pub fn move_by(&mut self, delta: isize) {
        let last = self.visible.len().saturating_sub(1);
        self.cursor = self.cursor.saturating_add_signed(delta).min(last);
        self.keep_cursor_in_view();
    }

    pub fn page_down(&mut self) {
        self.move_by(self.rows as isize);
    }

    pub fn page_up(&mut self) {
        self.move_by(-(self.rows as isize));
    }

    pub fn move_to_first(&mut self) {
        self.cursor = 0;
        self.keep_cursor_in_view();
    }

    pub fn move_to_last(&mut self) {
        self.cursor = self.visible.len().saturating_sub(1);
        self.keep_cursor_in_view();
    }

    /// Puts the cursor on the visible entry called `name`; false if there is
    /// none.
    pub fn select_name(&mut self, name: &str) -> bool {
        let found = self
            .visible
            .iter()
            .position(|&i| self.entries[i].name == name);
        if let Some(at) = found {
            self.cursor = at;
            // Show the entry in the middle rather than at the edge, so that
            // its neighbours are visible when coming back to a long folder.
            self.offset = at.saturating_sub(self.rows / 2);
            self.keep_cursor_in_view();
        }
        found.is_some()
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn set_filter(&mut self, filter: &str) {
        self.filter = filter.to_string();
        self.refresh();
    }

    pub fn show_hidden(&self) -> bool {
        self.show_hidden
    }

    pub fn set_show_hidden(&mut self, show: bool) {
        self.show_hidden = show;
        self.refresh();
    }

    /// The same folder read again: its entries are replaced, and the
    /// filter, the hidden setting and the scroll stay. The cursor stays on
    /// its entry, or at its place when that entry is gone.
    pub fn replace_entries(&mut self, mut entries: Vec<Entry>) {
        entries.sort_by(compare_entries);
        let name = self.current().map(|e| e.name.clone());
        let place = self.cursor;
        self.entries = entries;
        self.read = true;
        // The old indices mean nothing in the new entries.
        self.visible.clear();
        self.refresh();
        let found = name.and_then(|name| {
            self.visible
                .iter()
                .position(|&i| self.entries[i].name == name)
        });
        self.cursor = found.unwrap_or(place.min(self.visible.len().saturating_sub(1)));
        self.keep_cursor_in_view();
    }

    /// Recomputes what is visible, keeping the cursor on the same entry when
    /// it is still there.
    fn refresh(&mut self) {
        let current = self.visible.get(self.cursor).copied();
        let needle = self.filter.to_lowercase();
        self.visible = (0..self.entries.len())
            .filter(|&i| {
                let entry = &self.entries[i];
                (self.show_hidden || !entry.is_hidden())
                    && (needle.is_empty() || entry.name.to_lowercase().contains(&needle))
            })
            .collect();
        self.cursor = current
            .and_then(|c| self.visible.iter().position(|&i| i == c))
            .unwrap_or(0);
        self.keep_cursor_in_view();
    }

    fn keep_cursor_in_view(&mut self) {
        if self.cursor < self.offset {
            self.offset = self.cursor;
        } else if self.cursor >= self.offset + self.rows {
            self.offset = self.cursor + 1 - self.rows;
        }
        // Never leave empty rows at the bottom while entries above are
        // scrolled away (after a filter shrinks the list, say).
        let max_offset = self.visible.len().saturating_sub(self.rows);
        self.offset = self.offset.min(max_offset);
    }
}

/// Folders first, then the rest; alphabetical without regard to case, with
/// the exact name breaking ties so that the order is stable.
fn compare_entries(a: &Entry, b: &Entry) -> Ordering {
    b.is_folder()
        .cmp(&a.is_folder())
        .then_with(|| natural(&a.name.to_lowercase(), &b.name.to_lowercase()))
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listing: &Listing) -> Vec<&str> {
        listing.visible().map(|e| e.name.as_str()).collect()
    }

    fn sample() -> (tempfile::TempDir, Listing) {
        let dir = tempfile::tempdir().expect("tempdir");
        for folder in ["b-folder", "A-folder", ".hidden-folder"] {
            fs::create_dir(dir.path().join(folder)).expect("mkdir");
        }
        for (file, len) in [("zeta.txt", 3), ("Alpha.txt", 10), (".env", 1)] {
            fs::write(dir.path().join(file), vec![b'x'; len]).expect("write");
        }
        let entries = read_entries(dir.path()).expect("read");
        let listing = Listing::new(dir.path().to_path_buf(), entries, false);
        (dir, listing)
    }

    #[test]
    fn folders_come_first_then_files_alphabetically() {
        let (_dir, listing) = sample();
        assert_eq!(
            names(&listing),
            ["A-folder", "b-folder", "Alpha.txt", "zeta.txt"]
        );
        assert_eq!(listing.hidden_count(), 2);
        let alpha = listing.visible().nth(2).expect("alpha");
        assert_eq!(alpha.size, Some(10));
        assert_eq!(alpha.kind, EntryKind::File);
    }

    #[test]
    fn hidden_entries_show_on_request_in_their_place() {
        let (_dir, mut listing) = sample();
        listing.set_show_hidden(true);
        assert_eq!(
            names(&listing),
            [
                ".hidden-folder",
                "A-folder",
                "b-folder",
                ".env",
                "Alpha.txt",
                "zeta.txt"
            ]
        );
        assert_eq!(listing.hidden_count(), 0);
    }

    #[test]
    fn filter_ignores_case_and_keeps_the_cursor_on_its_entry() {
        let (_dir, mut listing) = sample();
        listing.move_to_last();
        assert_eq!(listing.current().map(|e| e.name.as_str()), Some("zeta.txt"));
        listing.set_filter("T");
        assert_eq!(names(&listing), ["Alpha.txt", "zeta.txt"]);
        assert_eq!(listing.current().map(|e| e.name.as_str()), Some("zeta.txt"));
        listing.set_filter("nothing matches");
        assert!(listing.current().is_none());
        listing.set_filter("");
        assert_eq!(listing.visible_len(), 4);
    }

    #[test]
    fn scrolling_follows_the_cursor_only_when_it_leaves_the_view() {
        let entries = (0..50)
            .map(|i| Entry {
                name: format!("f{i:02}"),
                path: PathBuf::from(format!("/x/f{i:02}")),
                kind: EntryKind::File,
                size: Some(1),
                is_link: false,
                problem: None,
            })
            .collect();
        let mut listing = Listing::new(PathBuf::from("/x"), entries, false);
        listing.set_rows(10);
        listing.move_by(9);
        assert_eq!(listing.offset(), 0);
        listing.move_by(1);
        assert_eq!(listing.offset(), 1);
        listing.page_down();
        assert_eq!(listing.cursor(), 20);
        listing.move_to_last();
        assert_eq!((listing.cursor(), listing.offset()), (49, 40));
        listing.move_by(-5);
        assert_eq!(listing.offset(), 40);
        listing.page_up();
        listing.page_up();
        listing.page_up();
        listing.page_up();
        listing.page_up();
        assert_eq!((listing.cursor(), listing.offset()), (0, 0));
    }

    #[cfg(unix)]
    #[test]
    fn entries_that_cannot_be_inspected_still_show() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling"))
            .expect("symlink");
        let entries = read_entries(dir.path()).expect("read");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, EntryKind::Other);
        assert!(entries[0].is_link);
        assert_eq!(entries[0].problem.as_deref(), Some("broken link"));
    }
}
