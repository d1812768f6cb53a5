//! `ferry send`: a transfer without the picker, for scripts and quick sends.
//!
//! Shows a progress bar on stderr when stderr is a terminal, prints one line
//! per file that did not simply land under its own name, and a summary.
//! Succeeds only when the server confirmed every file with a matching digest.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ferry_proto::Clash;
use ferry_proto::path::escape_for_display;
use humansize::{BINARY, format_size};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::transfer::progress::format_duration;
use crate::transfer::{Event, ItemResult, Options, Plan, Report, send};

/// Sends `paths` and prints what happened. Returns whether everything
/// picked was confirmed stored.
pub fn run(paths: &[PathBuf], options: &Options, follow_links: bool) -> bool {
    let plan = Plan::build(paths, follow_links);
    let mut ok = true;
    for skipped in &plan.skipped {
        let what = if skipped.by_choice {
            "skipped"
        } else {
            "cannot send"
        };
        eprintln!(
            "ferry: {what} {}: {}",
            escape_for_display(&skipped.local.to_string_lossy()),
            skipped.reason
        );
        ok &= skipped.by_choice;
    }
    if plan.items.is_empty() {
        eprintln!("ferry: nothing to send");
        return ok;
    }

    let bar = progress_bar(plan.total_bytes());
    let names: Vec<String> = plan.items.iter().map(|i| i.remote.clone()).collect();
    let reporter = {
        let bar = bar.clone();
        Arc::new(move |event: Event| match event {
            Event::Started { index } => {
                if let Some(name) = names.get(index) {
                    bar.set_message(escape_for_display(name));
                }
            }
            Event::Progress { total_sent, .. } => bar.set_position(total_sent),
            Event::Connected { .. } | Event::Finished { .. } => {}
        })
    };
    let report = send(&plan.items, options, &AtomicBool::new(false), reporter);
    bar.finish_and_clear();

    print_outcomes(&plan, &report);
    ok && report.all_ok()
}

fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One line per file whose outcome a person must know (a new name, a
/// failure), then the summary, which counts the rest.
fn print_outcomes(plan: &Plan, report: &Report) {
    let (mut stored, mut failed, mut bytes) = (0usize, 0usize, 0u64);
    let (mut replaced, mut identical) = (0usize, 0usize);
    for (item, result) in plan.items.iter().zip(&report.results) {
        let name = escape_for_display(&item.remote);
        match result {
            ItemResult::Stored {
                stored_as,
                clash,
                bytes: n,
            } => {
                stored += 1;
                bytes += n;
                match clash {
                    Clash::None => {}
                    Clash::Renamed => eprintln!(
                        "ferry: {name}: name taken, stored as {}",
                        escape_for_display(stored_as)
                    ),
                    Clash::Overwritten => replaced += 1,
                    Clash::Identical => identical += 1,
                }
            }
            ItemResult::Folder { .. } => {}
            ItemResult::Failed { reason } => {
                failed += 1;
                // Reasons can come from the server: print them inert.
                eprintln!("ferry: {name}: FAILED: {}", escape_for_display(reason));
            }
            ItemResult::NotSent { reason } => {
                failed += 1;
                eprintln!("ferry: {name}: not sent: {}", escape_for_display(reason));
            }
        }
    }
    let secs = report.elapsed.as_secs_f64().max(1e-6);
    let rate = format_size((report.bytes_sent as f64 / secs) as u64, BINARY);
    let files = plan.file_count();
    let took = if report.elapsed < Duration::from_secs(60) {
        format!("{secs:.2}s")
    } else {
        format_duration(report.elapsed)
    };
    let mut notes = String::new();
    if replaced > 0 {
        notes.push_str(&format!("; {replaced} replaced an existing file"));
    }
    if identical > 0 {
        notes.push_str(&format!("; {identical} already there, identical"));
    }
    if failed == 0 {
        println!(
            "sent {stored} file(s), {} in {took} ({rate}/s), all verified{notes}",
            format_size(bytes, BINARY)
        );
    } else {
        println!("{stored} of {files} file(s) stored and verified{notes}; {failed} not, see above");
    }
}
