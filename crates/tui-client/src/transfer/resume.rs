//! Resuming big files: which of them the server holds part of, and this
//! side's hash of that part, made before any connection opens.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_proto::Verdict;

use super::plan::Item;
use super::sender::{CHUNK, Event, Options, Reporter};

/// Files from this size on are sent resumably: the server keeps what
/// arrived if the transfer breaks, and a later send of the same file picks
/// up from there. (Matches the server's threshold.)
pub const RESUMABLE_MIN: u64 = 1 << 20;

/// This file's identity for resuming: where it is and which version of it
/// (size and modification time), so a changed file never resumes onto the
/// old one's bytes. `None` when the file cannot be looked at.
pub fn resume_key(local: &std::path::Path) -> Option<String> {
    let meta = std::fs::metadata(local).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let path = std::fs::canonicalize(local).ok()?;
    let mut h = blake3::Hasher::new();
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(&meta.len().to_le_bytes());
    h.update(&mtime.as_nanos().to_le_bytes());
    Some(h.finalize().to_hex()[..32].to_string())
}

/// Asks the server which big files it holds part of, from interrupted
/// uploads, and returns each item's starting offset (0 for most). Any
/// trouble asking just means starting from zero.
pub(super) fn resume_offsets(items: &[Item], options: &Options) -> Vec<u64> {
    let mut offsets = vec![0; items.len()];
    let wanted = |item: &Item| item.size() >= RESUMABLE_MIN;
    if !items.iter().any(wanted) {
        return offsets;
    }
    if let Ok(verdicts) =
        super::preflight::preflight(items, options, wanted, false, &AtomicBool::new(false))
    {
        for (offset, verdict) in offsets.iter_mut().zip(verdicts) {
            if let Some(Verdict::Resume { offset: at, .. }) = verdict {
                *offset = at;
            }
        }
    }
    offsets
}

/// Hashes the part of each resumed file the server already has (`offsets`
/// non-zero), before any connection is open. Done once the file's header
/// is out, it would leave the connection silent for as long as the disk
/// takes to read that part: minutes for tens of GiB, longer than a server
/// waits. A file whose kept part cannot be read is sent from the start.
pub(super) fn hash_kept_parts(
    items: &[Item],
    offsets: &mut [u64],
    cancel: &AtomicBool,
    report: &Reporter,
) -> HashMap<usize, blake3::Hasher> {
    let mut buf = Vec::new();
    items
        .iter()
        .zip(offsets.iter_mut())
        .enumerate()
        .filter_map(|(index, (item, offset))| {
            // The server never offers more than the file, but be sure.
            *offset = (*offset).min(item.size());
            if *offset == 0 {
                return None;
            }
            if buf.is_empty() {
                buf = vec![0u8; CHUNK];
            }
            report(Event::Checking {
                index,
                offset: *offset,
            });
            let hashed = File::open(&item.local)
                .ok()
                .and_then(|mut file| hash_prefix(&mut file, *offset, &mut buf, cancel));
            if hashed.is_none() {
                *offset = 0;
            }
            Some((index, hashed?))
        })
        .collect()
}

/// The BLAKE3 state after the first `len` bytes of `file`; `None` if they
/// cannot all be read, or on cancel.
fn hash_prefix(
    file: &mut File,
    len: u64,
    buf: &mut [u8],
    cancel: &AtomicBool,
) -> Option<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    let mut left = len;
    while left > 0 {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match file.read(&mut buf[..want]) {
            Ok(0) => return None,
            Ok(n) => {
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(hasher)
}
