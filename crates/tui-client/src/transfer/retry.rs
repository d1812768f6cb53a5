//! Remembering what did not make it, so that `ferry send --retry-failed`
//! (and the picker's retry key) can send exactly those files again.
//!
//! The record is a small JSON file in the user's state folder
//! (`$XDG_STATE_HOME/ferry/failed.json`, else `~/.local/state/ferry/`),
//! written after every transfer: per server, each file that failed or was
//! not sent there, where it is here and where it was going.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ferry_proto::{OnClash, Verdict};
use serde::{Deserialize, Serialize};

use super::plan::{Item, ItemKind, Plan, Skipped};
use super::preflight::preflight;
use super::sender::{ItemResult, Options, Report};

/// One file (or empty folder) to try again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub local: PathBuf,
    pub remote: String,
    /// An empty folder, made on the server rather than sent. Absent from
    /// records written before folders were kept in them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folder: bool,
}

/// The last transfer's failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub server: String,
    pub files: Vec<Failed>,
    /// The paths of a send stopped while it was still walking them: files
    /// under them that were not found by then are in no list, so a retry
    /// cannot send them and must not say that everything went.
    pub unwalked: Vec<PathBuf>,
}

/// Where the record lives, if a home for it can be found.
pub fn record_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("ferry").join("failed.json"))
}

/// Every server's record, as kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    servers: BTreeMap<String, Vec<Failed>>,
    /// [`Record::unwalked`], by server. Kept beside `servers` rather than
    /// in it, so that records written before it existed still read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    unwalked: BTreeMap<String, Vec<PathBuf>>,
}

fn read_book(path: &std::path::Path) -> Result<Book, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is damaged: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Remembers the files of `items` that did not end stored at `server`, and
/// the `unwalked` paths whose walk was cut short, or forgets that server's
/// record when there are neither. Other servers' records are left alone.
/// Failing to write it only costs the retry.
pub fn remember(
    server: &str,
    items: &[Item],
    report: &Report,
    unwalked: &[PathBuf],
) -> Result<(), String> {
    let path = record_path().ok_or("no HOME or XDG_STATE_HOME to keep the retry list in")?;
    let files: Vec<Failed> = items
        .iter()
        .zip(&report.results)
        .filter(|(_, result)| {
            matches!(
                result,
                ItemResult::Failed { .. } | ItemResult::NotSent { .. }
            )
        })
        .map(|(item, _)| Failed {
            // Absolute, so that a retry from another folder finds it.
            local: std::path::absolute(&item.local).unwrap_or_else(|_| item.local.clone()),
            remote: item.remote.clone(),
            folder: item.kind == ItemKind::Folder,
        })
        .collect();
    let unwalked = unwalked
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    remember_at(&path, server, files, unwalked)
}

/// [`remember`], with the record at `path`.
fn remember_at(
    path: &Path,
    server: &str,
    files: Vec<Failed>,
    unwalked: Vec<PathBuf>,
) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    // Two transfers ending at once (to different servers, say) must not
    // lose each other's record: the read-modify-write holds a lock.
    let _lock = lock_beside(path)?;
    // A damaged book is started afresh rather than blocking every send.
    let mut book = read_book(path).unwrap_or_default();
    if files.is_empty() && unwalked.is_empty() {
        let forgot_files = book.servers.remove(server).is_some();
        let forgot_walk = book.unwalked.remove(server).is_some();
        if !forgot_files && !forgot_walk {
            // Nothing to remember and nothing to forget: other servers'
            // records stay as they are, unwritten.
            return Ok(());
        }
    } else {
        book.servers.insert(server.to_string(), files);
        if unwalked.is_empty() {
            book.unwalked.remove(server);
        } else {
            book.unwalked.insert(server.to_string(), unwalked);
        }
    }
    if book.servers.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        };
    }
    // Written aside and renamed, so a reader never sees half a file.
    let json = serde_json::to_vec_pretty(&book).map_err(|e| e.to_string())?;
    let aside = path.with_extension(format!("json.{}", std::process::id()));
    fs::write(&aside, json).map_err(|e| e.to_string())?;
    fs::rename(&aside, path).map_err(|e| e.to_string())
}

/// An exclusive lock on a file beside the record, held until the returned
/// file is dropped.
fn lock_beside(path: &Path) -> Result<fs::File, String> {
    let lock_path = path.with_extension("json.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    Ok(lock)
}

/// What failed last time at `server`, if anything did.
pub fn load(server: &str) -> Result<Option<Record>, String> {
    let Some(path) = record_path() else {
        return Ok(None);
    };
    let mut book = read_book(&path)?;
    Ok(book.servers.remove(server).map(|files| Record {
        server: server.to_string(),
        files,
        unwalked: book.unwalked.remove(server).unwrap_or_default(),
    }))
}

/// A plan that sends the recorded files again, each to where it was going
/// (a file from inside a folder keeps its place in that folder). Files that
/// are gone since are listed as skipped.
pub fn plan(record: &Record) -> Plan {
    let mut plan = Plan::default();
    for f in &record.files {
        match fs::metadata(&f.local) {
            Ok(m) if m.is_file() && !f.folder => plan.items.push(Item {
                local: f.local.clone(),
                remote: f.remote.clone(),
                kind: ItemKind::File { size: m.len() },
            }),
            Ok(m) if m.is_dir() && f.folder => plan.items.push(Item {
                local: f.local.clone(),
                remote: f.remote.clone(),
                kind: ItemKind::Folder,
            }),
            Ok(_) => plan.skipped.push(Skipped {
                local: f.local.clone(),
                reason: if f.folder {
                    "is no longer a folder".into()
                } else {
                    "is no longer a regular file".into()
                },
                by_choice: false,
            }),
            Err(e) => plan.skipped.push(Skipped {
                local: f.local.clone(),
                reason: format!("cannot read: {e}"),
                by_choice: false,
            }),
        }
    }
    plan
}

/// Takes out of `plan` the files the server already holds, byte for byte,
/// under the name each was going to, and lists their names in
/// [`Plan::already_stored`]. A transfer stopped before the server confirmed
/// a file may still have stored it, and sending it again would keep a
/// second copy under a numbered name.
/// Only files whose name is taken there, or that would resume, are hashed,
/// to be compared. `Err`
/// when the server cannot be asked (the plan is left as it is); a file that
/// cannot be hashed here is simply kept.
///
/// Returns the server's verdicts on what is left of the plan, as
/// [`preflight`] gives them, so that the plan screen need not ask again;
/// `None` under `--on-clash skip-identical`, whose verdicts need every
/// file's digest, which this does not take.
pub fn drop_already_stored(
    plan: &mut Plan,
    options: &Options,
    stop: &AtomicBool,
) -> Result<Option<Vec<Option<Verdict>>>, String> {
    let verdicts = preflight(&plan.items, options, |_| true, false, stop)?;
    let there = identical_among_taken(plan, options, &verdicts, stop);
    let mut kept_verdicts = Vec::with_capacity(verdicts.len());
    let mut items = Vec::with_capacity(plan.items.len());
    for ((item, verdict), there) in plan.items.drain(..).zip(verdicts).zip(there) {
        if there {
            plan.already_stored.push(item.remote);
        } else {
            items.push(item);
            kept_verdicts.push(verdict);
        }
    }
    plan.items = items;
    Ok((options.on_clash != OnClash::SkipIdentical).then_some(kept_verdicts))
}

/// For each item, whether the server holds those very bytes under its
/// name, asked only of the names `verdicts` found taken. All false when
/// that cannot be told.
fn identical_among_taken(
    plan: &Plan,
    options: &Options,
    verdicts: &[Option<Verdict>],
    stop: &AtomicBool,
) -> Vec<bool> {
    let none = vec![false; plan.items.len()];
    let taken: HashSet<&str> = plan
        .items
        .iter()
        .zip(verdicts)
        // A resume may be of a file whose name is taken too (by the very
        // bytes, sent before). Older servers do not say so in the verdict,
        // so every resume is asked about.
        .filter(|(_, v)| {
            matches!(
                v,
                Some(Verdict::Clash { .. } | Verdict::Identical | Verdict::Resume { .. })
            )
        })
        .map(|(item, _)| item.remote.as_str())
        .collect();
    if taken.is_empty() {
        return none;
    }
    let compare = Options {
        on_clash: OnClash::SkipIdentical,
        ..options.clone()
    };
    let ask = |item: &Item| taken.contains(item.remote.as_str());
    match preflight(&plan.items, &compare, ask, true, stop) {
        Ok(compared) => compared
            .iter()
            .map(|v| matches!(v, Some(Verdict::Identical)))
            .collect(),
        Err(_) => none,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn transfers_ending_at_once_keep_each_others_records() {
        let state = tempfile::tempdir().expect("tempdir");
        let path = state.path().join("ferry").join("failed.json");
        let servers: Vec<String> = (0..8).map(|i| format!("10.0.0.{i}:8090")).collect();
        thread::scope(|scope| {
            for server in &servers {
                let path = &path;
                scope.spawn(move || {
                    let files = vec![Failed {
                        local: PathBuf::from(format!("/here/{server}")),
                        remote: "there.bin".into(),
                        folder: false,
                    }];
                    remember_at(path, server, files, Vec::new()).expect("remembered");
                });
            }
        });
        let book = read_book(&path).expect("readable");
        let kept: Vec<&String> = book.servers.keys().collect();
        let mut expected: Vec<&String> = servers.iter().collect();
        expected.sort();
        assert_eq!(kept, expected);
        // Forgetting goes through the same lock, and the last one removes
        // the record.
        for server in &servers {
            remember_at(&path, server, Vec::new(), Vec::new()).expect("forgotten");
        }
        assert!(!path.exists());
    }

    #[test]
    fn a_walk_cut_short_is_remembered_until_a_send_ends_whole() {
        let state = tempfile::tempdir().expect("tempdir");
        let path = state.path().join("failed.json");
        let roots = vec![PathBuf::from("/here/photos")];
        // Everything found was sent, but not everything was found.
        remember_at(&path, "s:1", Vec::new(), roots.clone()).expect("remembered");
        let book = read_book(&path).expect("readable");
        assert_eq!(book.servers.get("s:1"), Some(&Vec::new()));
        assert_eq!(book.unwalked.get("s:1"), Some(&roots));
        // The next send that walks all it was given forgets it.
        remember_at(&path, "s:1", Vec::new(), Vec::new()).expect("forgotten");
        assert!(!path.exists());
    }

    #[test]
    fn a_record_from_before_walks_were_remembered_still_reads() {
        let state = tempfile::tempdir().expect("tempdir");
        let path = state.path().join("failed.json");
        let old = r#"{"servers":{"s:1":[{"local":"/here/a","remote":"a"}]}}"#;
        fs::write(&path, old).expect("written");
        let book = read_book(&path).expect("readable");
        assert_eq!(book.servers["s:1"].len(), 1);
        assert!(book.unwalked.is_empty());
    }
}
