//! Asking the server what it would do with each file, before any byte of
//! them moves: new, identical, a clash (and what the policy will do), a
//! resume, or a refusal with its reason.
//!
//! The questions go out in `plan` messages of a bounded size, all written
//! before the first answer is read, so even a long list costs about one
//! round trip. Nothing on the server changes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_proto::{ClientMsg, ErrorCode, OnClash, PlanEntry, ServerMsg, Verdict, to_body};

use super::handshake::{connect, describe_io, read_server_msg, send_frame};
use super::link::Link;
use super::plan::{Item, ItemKind};
use super::resume::{RESUMABLE_MIN, resume_key};
use super::sender::Options;
use crate::browse::describe_error;

/// Most files asked about in one message (the server takes up to 256).
const FILES_PER_MESSAGE: usize = 200;
/// Most bytes of JSON in one message, well under the frame limit, so that
/// the answer (which repeats long names) fits in one frame too.
const BYTES_PER_MESSAGE: usize = 24 * 1024;

/// The server's verdict on each item for which `ask` is true (`None` for
/// the others and for folders). `with_digests` hashes each file first, so
/// that identical files can be recognised (for `skip-identical`); raising
/// `stop` ends that hashing, which can take long, with an error.
pub fn preflight(
    items: &[Item],
    options: &Options,
    ask: impl Fn(&Item) -> bool,
    with_digests: bool,
    stop: &AtomicBool,
) -> Result<Vec<Option<Verdict>>, String> {
    let mut verdicts = vec![None; items.len()];
    let mut messages: Vec<Vec<PlanEntry>> = vec![Vec::new()];
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        let ItemKind::File { size } = item.kind else {
            continue;
        };
        if !ask(item) {
            continue;
        }
        // A file that cannot be read here would only fail once its turn to
        // be sent came: the plan says so instead, and the rest goes on.
        let blake3 = if with_digests && options.on_clash == OnClash::SkipIdentical {
            match hash_file(item, stop) {
                Ok(digest) => Some(digest),
                Err(_) if stop.load(Ordering::Relaxed) => return Err("stopped".into()),
                Err(e) => {
                    verdicts[index] = Some(unreadable(&e));
                    continue;
                }
            }
        } else {
            if let Err(e) = File::open(&item.local) {
                verdicts[index] = Some(unreadable(&e));
                continue;
            }
            None
        };
        let entry = PlanEntry {
            id: index as u64,
            path: item.remote.clone(),
            size,
            on_clash: options.on_clash,
            blake3,
            resume_key: (options.resume && size >= RESUMABLE_MIN)
                .then(|| resume_key(&item.local))
                .flatten(),
        };
        let len = to_body(&entry).len();
        let full = messages
            .last()
            .is_some_and(|m| m.len() >= FILES_PER_MESSAGE || bytes + len > BYTES_PER_MESSAGE);
        if full {
            messages.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(m) = messages.last_mut() {
            m.push(entry);
        }
    }
    messages.retain(|m| !m.is_empty());

    if messages.is_empty() {
        return Ok(verdicts);
    }
    let (link, _, _) = connect(options)?;
    let asked = messages.len();
    // Answers are read while questions still go out: a long list must not
    // fill both directions' buffers and stall.
    let Link {
        reader, mut writer, ..
    } = link;
    let answers = std::thread::spawn(move || {
        let mut answers = BufReader::new(reader);
        let mut got = Vec::with_capacity(asked);
        for _ in 0..asked {
            match read_server_msg(&mut answers) {
                Ok(msg) => got.push(msg),
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    });
    {
        let mut out = BufWriter::new(&mut writer);
        for files in messages {
            send_frame(&mut out, &ClientMsg::Plan { files }).map_err(|e| describe_io(&e))?;
        }
        out.flush().map_err(|e| describe_io(&e))?;
    }
    let answers = answers
        .join()
        .map_err(|_| "the answer reader crashed".to_string())??;
    for answer in answers {
        match answer {
            Some(ServerMsg::Plan { verdicts: batch }) => {
                for v in batch {
                    if let Some(slot) = usize::try_from(v.id).ok().and_then(|i| verdicts.get_mut(i))
                    {
                        *slot = Some(v.verdict);
                    }
                }
            }
            Some(ServerMsg::Error { message, .. }) => {
                return Err(format!("the server cannot plan: {message}"));
            }
            Some(_) => return Err("the server answered a plan out of turn".into()),
            None => return Err("the server closed the connection while planning".into()),
        }
    }
    writer.close();
    Ok(verdicts)
}

/// The verdict on a file that cannot be read here. It is given here, not
/// by the server, and the send leaves the file out as it does a refused
/// one: it counts as failed, and `--retry-failed` tries it again.
fn unreadable(e: &io::Error) -> Verdict {
    Verdict::Refused {
        code: ErrorCode::Io,
        message: format!("cannot be read here: {}", describe_error(e)),
    }
}

fn hash_file(item: &Item, stop: &AtomicBool) -> io::Result<String> {
    let mut file = File::open(&item.local)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().to_hex().to_string()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
