//! Turning the paths a user picked into the list of things to send.
//!
//! A folder keeps its own name as the top folder on the server, like
//! `scp -r`. Symlinks are not followed unless asked; anything that cannot be
//! sent (a socket, an unreadable folder, a name the protocol refuses) is
//! listed as skipped with its reason rather than silently dropped.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use ferry_proto::path as names;
use walkdir::WalkDir;

/// One thing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it is here.
    pub local: PathBuf,
    /// Its `/`-separated path on the server, relative to the server's folder.
    pub remote: String,
    pub kind: ItemKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A regular file of this many bytes (as seen when planning).
    File { size: u64 },
    /// A folder with nothing else to send inside it, so that it still
    /// exists on the server.
    Folder,
}

/// Something the user picked that will not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub local: PathBuf,
    pub reason: String,
    /// Left out by policy (a symlink not followed), not because of a problem.
    pub by_choice: bool,
}

/// Everything a send will do, known before the first byte moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Walks `paths` (files or folders) into a plan.
    pub fn build(paths: &[PathBuf], follow_links: bool) -> Plan {
        let mut plan = Plan::default();
        for path in paths {
            plan.add_root(path, follow_links);
        }
        plan.keep_only_empty_folders();
        plan
    }

    /// Number of files (folders not counted).
    pub fn file_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.kind, ItemKind::File { .. }))
            .count()
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(Item::size).sum()
    }

    fn add_root(&mut self, root: &Path, follow_links: bool) {
        let meta = match fs::symlink_metadata(root) {
            Ok(m) => m,
            Err(e) => return self.skip(root, format!("cannot read: {e}")),
        };
        if meta.file_type().is_symlink() && !follow_links {
            return self.skip_by_choice(
                root,
                "is a symlink (use --follow-links to send its target)".into(),
            );
        }
        // The name the root gets on the server: its own last component.
        let base = match root_name(root) {
            Ok(b) => b,
            Err(reason) => return self.skip(root, reason),
        };
        let walk = WalkDir::new(root)
            .follow_links(follow_links)
            .sort_by_file_name();
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let at = e.path().unwrap_or(root).to_path_buf();
                    self.skip(
                        &at,
                        format!(
                            "cannot read: {}",
                            e.io_error()
                                .map_or_else(|| e.to_string(), ToString::to_string)
                        ),
                    );
                    continue;
                }
            };
            let path = entry.path();
            let remote = match remote_name(&base, root, path) {
                Ok(r) => r,
                Err(reason) => {
                    self.skip(path, reason);
                    continue;
                }
            };
            let file_type = entry.file_type();
            if file_type.is_dir() {
                self.items.push(Item {
                    local: path.to_path_buf(),
                    remote,
                    kind: ItemKind::Folder,
                });
            } else if file_type.is_file() {
                match entry.metadata() {
                    Ok(m) => self.items.push(Item {
                        local: path.to_path_buf(),
                        remote,
                        kind: ItemKind::File { size: m.len() },
                    }),
                    Err(e) => self.skip(path, format!("cannot read: {e}")),
                }
            } else if file_type.is_symlink() {
                self.skip_by_choice(path, "is a symlink (not followed)".into());
            } else {
                self.skip(path, "is not a regular file or folder".into());
            }
        }
    }

    /// Folders only need their own message when nothing inside them is sent:
    /// the server creates the folders on a file's path by itself.
    fn keep_only_empty_folders(&mut self) {
        let mut ancestors = HashSet::new();
        for item in &self.items {
            let mut rest = item.remote.as_str();
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if !ancestors.insert(parent.to_string()) {
                    break;
                }
                rest = parent;
            }
        }
        self.items
            .retain(|i| i.kind != ItemKind::Folder || !ancestors.contains(&i.remote));
    }

    fn skip(&mut self, local: &Path, reason: String) {
        self.skipped.push(Skipped {
            local: local.to_path_buf(),
            reason,
            by_choice: false,
        });
    }

    fn skip_by_choice(&mut self, local: &Path, reason: String) {
        self.skipped.push(Skipped {
            local: local.to_path_buf(),
            reason,
            by_choice: true,
        });
    }
}

impl Item {
    /// Bytes this item puts on the wire (0 for a folder).
    pub fn size(&self) -> u64 {
        match self.kind {
            ItemKind::File { size } => size,
            ItemKind::Folder => 0,
        }
    }
}

/// The last component of a root the user named, as a valid wire name.
fn root_name(root: &Path) -> Result<String, String> {
    // `send .` or `send dir/..` name a folder by a path with no usable last
    // component; fall back to the folder's real name.
    let resolved;
    let named = match root.file_name() {
        Some(n) => n,
        None => {
            resolved = fs::canonicalize(root).map_err(|e| format!("cannot resolve: {e}"))?;
            resolved
                .file_name()
                .ok_or_else(|| "has no name to send it under".to_string())?
        }
    };
    let name = named
        .to_str()
        .ok_or_else(|| "name is not valid UTF-8".to_string())?;
    names::check_component(name).map_err(|e| format!("name refused: {e}"))?;
    Ok(name.to_string())
}

fn remote_name(base: &str, root: &Path, path: &Path) -> Result<String, String> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| "is outside the folder being sent".to_string())?;
    let mut remote = base.to_string();
    for part in rel.components() {
        let part = part
            .as_os_str()
            .to_str()
            .ok_or_else(|| "name is not valid UTF-8".to_string())?;
        remote.push('/');
        remote.push_str(part);
    }
    // Send the canonical spelling, as the server stores it.
    let remote = names::canonical(&remote).into_owned();
    names::components(&remote).map_err(|e| format!("name refused: {e}"))?;
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("photos");
        fs::create_dir_all(root.join("2026/empty")).expect("mkdir");
        fs::create_dir_all(root.join("2025")).expect("mkdir");
        fs::write(root.join("2026/a.jpg"), b"aaaa").expect("write");
        fs::write(root.join("2025/b.jpg"), b"bb").expect("write");
        fs::write(root.join("top.txt"), b"").expect("write");
        dir
    }

    #[test]
    fn folder_keeps_its_name_and_empty_folders_survive() {
        let dir = tree();
        let plan = Plan::build(&[dir.path().join("photos")], false);
        let remotes: Vec<(&str, u64)> = plan
            .items
            .iter()
            .map(|i| (i.remote.as_str(), i.size()))
            .collect();
        assert_eq!(
            remotes,
            [
                ("photos/2025/b.jpg", 2),
                ("photos/2026/a.jpg", 4),
                ("photos/2026/empty", 0),
                ("photos/top.txt", 0),
            ]
        );
        assert_eq!(plan.file_count(), 3);
        assert_eq!(plan.total_bytes(), 6);
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn a_single_file_is_sent_under_its_own_name() {
        let dir = tree();
        let plan = Plan::build(&[dir.path().join("photos/2026/a.jpg")], false);
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].remote, "a.jpg");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_skipped_unless_followed() {
        let dir = tree();
        let root = dir.path().join("photos");
        std::os::unix::fs::symlink(root.join("top.txt"), root.join("link.txt")).expect("symlink");
        let plan = Plan::build(std::slice::from_ref(&root), false);
        assert!(plan.items.iter().all(|i| !i.remote.ends_with("link.txt")));
        assert_eq!(plan.skipped.len(), 1);
        assert!(plan.skipped[0].reason.contains("symlink"));
        assert!(plan.skipped[0].by_choice);
        let followed = Plan::build(&[root], true);
        assert!(followed.items.iter().any(|i| i.remote == "photos/link.txt"));
    }

    #[test]
    fn unsendable_names_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("a\\b.txt");
        fs::write(&bad, b"x").expect("write");
        let plan = Plan::build(&[bad], false);
        assert!(plan.items.is_empty());
        assert!(
            plan.skipped[0].reason.contains("backslash"),
            "{:?}",
            plan.skipped
        );
    }

    #[test]
    fn missing_paths_are_reported() {
        let plan = Plan::build(&[PathBuf::from("/definitely/not/here")], false);
        assert!(plan.items.is_empty());
        assert!(plan.skipped[0].reason.starts_with("cannot read"));
        assert!(!plan.skipped[0].by_choice);
    }
}
