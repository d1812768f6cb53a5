//! The transfer panel: a headline, a gauge for the whole transfer, one for
//! the file going out, and the outcome of every file so far. The same panel
//! with a summary headline stays up after the end until a key is pressed.
//!
//! Sent is not stored: a gauge reaches 100% only once the server confirmed
//! every file under it durably stored. Until then it stops at 99% and says
//! how much is sent and how much is stored.

use std::time::Instant;

use ferry_proto::path::escape_for_display;
use ferry_proto::{Clash, Verdict};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, Paragraph};

use super::bytes;
use super::{fit_name_and_note, skipped_line, without_addr};
use crate::app::{App, Counts, Meter, Phase, TransferView};
use crate::transfer::progress::format_duration;
use crate::transfer::{ItemKind, ItemResult};
use crate::words::plural;

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, view: &TransferView, now: Instant) {
    let [headline, total, file, finished] = areas(area, view.is_ended());
    frame.render_widget(Paragraph::new(headline_text(app, view)), headline);
    draw_total(frame, total, view, now);
    draw_file(frame, file, view, now);
    draw_finished(frame, finished, view, &app.addr);
}

fn headline_text(app: &App, view: &TransferView) -> Line<'static> {
    let counts = view.counts();
    let files = view
        .outgoing
        .iter()
        .filter_map(|&i| view.items.get(i))
        .filter(|i| matches!(i.kind, ItemKind::File { .. }))
        .count();
    let resumed = view.total.as_ref().map_or(0, Meter::resumed);
    match view.phase {
        Phase::Planning | Phase::Asking | Phase::Review => {
            Line::raw(format!("Looking at what to send to {}…", app.addr)).bold()
        }
        Phase::Sending => {
            let mut text = format!(
                "Sending {} to {}: {}",
                plural(files, "file"),
                app.addr,
                bytes(view.outgoing_bytes())
            );
            if resumed > 0 {
                text.push_str(&format!(
                    " ({} already there from an earlier try)",
                    bytes(resumed)
                ));
            }
            Line::raw(text).bold()
        }
        Phase::Cancelling => Line::styled(
            "Cancelling… waiting for the server to let go of the file in flight.",
            Style::new().fg(Color::Yellow).bold(),
        ),
        Phase::Ended { cancelled: true } => Line::styled(
            format!("Cancelled: {}.", sent_and_unsent(&counts)),
            Style::new().fg(Color::Yellow).bold(),
        ),
        Phase::Ended { cancelled: false } => match view.stop_reason() {
            Some(reason) => Line::styled(
                format!(
                    "Stopped: {}. {}.",
                    without_addr(reason, &app.addr),
                    sent_and_unsent(&counts)
                ),
                Style::new().fg(Color::Red).bold(),
            ),
            None if counts.unsent() > 0 => Line::styled(
                format!("Finished with problems: {}.", finished_counts(&counts)),
                Style::new().fg(Color::Yellow).bold(),
            ),
            None => Line::styled(
                format!("Finished: {}.", finished_counts(&counts)),
                Style::new().fg(Color::Green).bold(),
            ),
        },
    }
}

/// One line on a transfer going on behind the folder list (see
/// [`crate::app::App::behind`]): how far it is, or how it ended, then how
/// to see it. On a narrow screen the hint goes first, whole.
pub(super) fn behind_line(view: &TransferView, now: Instant, width: usize) -> Line<'static> {
    let counts = view.counts();
    let (parts, color) = match view.phase {
        Phase::Sending => {
            let parts = view.total.as_ref().map_or_else(
                || vec!["Sending: connecting…".to_string()],
                |meter| {
                    let ratio = confirmed_ratio(meter, view.all_confirmed());
                    let mut parts = vec![format!("Sending: {}", percent(ratio))];
                    parts.extend(speed(meter, now));
                    parts
                },
            );
            (parts, Color::Cyan)
        }
        Phase::Cancelling => (vec!["Cancelling…".to_string()], Color::Yellow),
        Phase::Ended { cancelled: true } => (
            vec![format!("Cancelled: {}", sent_and_unsent(&counts))],
            Color::Yellow,
        ),
        Phase::Ended { cancelled: false }
            if view.stop_reason().is_some() || counts.unsent() > 0 =>
        {
            (
                vec![format!(
                    "Finished with problems: {}",
                    finished_counts(&counts)
                )],
                Color::Yellow,
            )
        }
        Phase::Ended { cancelled: false } => (
            vec![format!("Finished: {}", finished_counts(&counts))],
            Color::Green,
        ),
        // Never sent behind the list before it is confirmed.
        Phase::Planning | Phase::Asking | Phase::Review => {
            (vec!["Preparing a transfer…".to_string()], Color::Cyan)
        }
    };
    let mut parts: Vec<(Option<u8>, String)> = parts.into_iter().map(|p| (None, p)).collect();
    parts.push((Some(0), "Tab shows it".into()));
    Line::styled(fitted(&parts, width), Style::new().fg(color))
}

/// Files the server now holds because of this transfer: identical files
/// it already had are counted apart, as "already there", and the empty
/// folders it made apart too (see [`folders_made`]), since the plan and
/// the headline count files.
fn stored_now(counts: &Counts) -> usize {
    counts.stored - counts.identical
}

/// ", 1 empty folder", or nothing when none was made.
fn folders_made(counts: &Counts) -> String {
    match counts.folders {
        0 => String::new(),
        n => format!(", {}", plural(n, "empty folder")),
    }
}

fn sent_and_unsent(counts: &Counts) -> String {
    format!(
        "{} stored{}, {} not sent",
        stored_now(counts),
        folders_made(counts),
        counts.unsent()
    )
}

fn finished_counts(counts: &Counts) -> String {
    // Renamed files are among those stored: "1 stored, 1 renamed" read as
    // two files.
    let mut parts = vec![match counts.renamed {
        0 => format!("{} stored{}", stored_now(counts), folders_made(counts)),
        renamed => format!(
            "{} stored ({renamed} renamed){}",
            stored_now(counts),
            folders_made(counts)
        ),
    }];
    if counts.identical > 0 {
        parts.push(format!("{} already there", counts.identical));
    }
    if counts.failed > 0 {
        parts.push(format!("{} failed", counts.failed));
    }
    if counts.not_sent + counts.skipped > 0 {
        parts.push(format!("{} not sent", counts.not_sent + counts.skipped));
    }
    parts.join(", ")
}

fn draw_total(frame: &mut Frame, area: Rect, view: &TransferView, now: Instant) {
    let block = Block::bordered().title(" Total ");
    let Some(progress) = &view.total else {
        let checking = view.checking.and_then(|(index, offset)| {
            let item = view.items.get(index)?;
            Some(format!(
                "reading the {} of {} the server already has, to check it…",
                bytes(offset),
                item.remote
            ))
        });
        let idle = match (view.phase, checking) {
            (Phase::Ended { .. }, _) => "nothing was sent".to_string(),
            (_, Some(checking)) => checking,
            _ => "connecting to the server…".to_string(),
        };
        frame.render_widget(Paragraph::new(idle).block(block), area);
        return;
    };
    let ratio = confirmed_ratio(progress, view.all_confirmed());
    // On a narrow screen what was sent goes first, then what is stored.
    let mut parts = vec![
        (None, percent(ratio)),
        (Some(0), format!("sent {}", steady(progress.done()))),
        (
            Some(1),
            format!(
                "stored {} / {}",
                steady(view.stored_bytes()),
                steady(progress.total())
            ),
        ),
    ];
    match (view.phase, view.elapsed) {
        (Phase::Ended { .. }, Some(elapsed)) => {
            // What the server already had did not cross the network.
            let moved = progress.done().saturating_sub(progress.resumed());
            let secs = elapsed.as_secs_f64();
            if secs > 0.0 && moved > 0 {
                parts.push((None, format!("{}/s", bytes((moved as f64 / secs) as u64))));
            }
            parts.push((None, format!("took {}", format_duration(elapsed))));
        }
        _ => parts.extend(speed(progress, now).into_iter().map(|p| (None, p))),
    }
    let label = fitted(&parts, inner_width(area));
    frame.render_widget(gauge(ratio, label, Color::Green).block(block), area);
}

fn draw_file(frame: &mut Frame, area: Rect, view: &TransferView, now: Instant) {
    let current = view.current.and_then(|i| view.items.get(i));
    let (Some(item), Some(progress)) = (current, &view.file) else {
        let idle = match view.phase {
            Phase::Ended { .. } => "",
            _ => "waiting…",
        };
        frame.render_widget(
            Paragraph::new(idle).block(Block::bordered().title(" File ")),
            area,
        );
        return;
    };
    let block = Block::bordered().title(format!(" {} ", item.remote));
    let confirmed = view.current_confirmed();
    let ratio = confirmed_ratio(progress, confirmed);
    let mut parts = vec![
        (None, percent(ratio)),
        (
            Some(1),
            format!("{} / {}", steady(progress.done()), steady(progress.total())),
        ),
    ];
    if progress.resumed() > 0 {
        parts.push((Some(0), format!("resumed at {}", bytes(progress.resumed()))));
    }
    if confirmed {
        parts.push((None, "stored".into()));
    } else if progress.done() >= progress.total() {
        parts.push((None, "waiting for the server to confirm".into()));
    } else {
        parts.extend(speed(progress, now).into_iter().map(|p| (None, p)));
    }
    let label = fitted(&parts, inner_width(area));
    frame.render_widget(gauge(ratio, label, Color::Cyan).block(block), area);
}

/// How far along, where only the server's confirmation makes it whole:
/// without it the ratio stops short of 1.
fn confirmed_ratio(progress: &Meter, confirmed: bool) -> f64 {
    if confirmed {
        progress.ratio()
    } else {
        progress.ratio().min(0.99)
    }
}

/// "42%", rounded down so that 100% means done.
fn percent(ratio: f64) -> String {
    format!("{}%", (ratio * 100.0).floor())
}

/// A count that changes while it is on screen, always with two decimals
/// ("38.00 MiB", not "38 MiB" one moment and "38.50 MiB" the next), so
/// that the label around it keeps still. The total it is read against is
/// written the same way ("2.00 GiB / 2.00 GiB", not "2.00 GiB / 2 GiB").
pub(super) fn steady(n: u64) -> String {
    // Whole bytes have no decimals to keep ("0 B", not "0.00 B").
    match n {
        0..1024 => bytes(n),
        _ => humansize::format_size(n, humansize::BINARY.decimal_zeroes(2)),
    }
}

/// "5 MiB/s" and "ETA 4s", or nothing while the rate is not known yet.
fn speed(progress: &Meter, now: Instant) -> Vec<String> {
    let rate = progress
        .rate(now)
        .map(|r| format!("{}/s", steady(r as u64)));
    let eta = progress
        .eta(now)
        .map(|eta| format!("ETA {}", format_duration(eta)));
    rate.into_iter().chain(eta).collect()
}

/// A gauge's label: `parts` joined with " · ". Where that is wider than
/// `width`, parts are left out by their number, lowest first (`None` is
/// always kept), so that a narrow screen still shows how far along it is,
/// how fast and how long is left.
fn fitted(parts: &[(Option<u8>, String)], width: usize) -> String {
    let join = |cut: Option<u8>| {
        parts
            .iter()
            .filter(|(rank, _)| rank.is_none() || *rank > cut)
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let mut cut = None;
    let mut label = join(cut);
    let last = parts.iter().filter_map(|(rank, _)| *rank).max();
    while Span::raw(label.as_str()).width() > width && cut < last {
        cut = Some(cut.map_or(0, |c| c + 1));
        label = join(cut);
    }
    label
}

/// Columns inside a bordered block.
fn inner_width(area: Rect) -> usize {
    usize::from(area.width.saturating_sub(2))
}

fn gauge(ratio: f64, label: String, color: Color) -> Gauge<'static> {
    Gauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(Span::raw(label).white().bold())
        .gauge_style(Style::new().fg(color).bg(Color::Black))
        .use_unicode(true)
}

fn draw_finished(frame: &mut Frame, area: Rect, view: &TransferView, addr: &str) {
    let ended = view.is_ended();
    // Once it has ended, what went wrong comes first (then renamed files,
    // then the rest), each group by path as people count, and the list
    // scrolls; while it runs, the newest is at the bottom and the oldest
    // scroll off the top.
    let width = inner_width(area);
    let mut place = vec![0; view.items.len()];
    for (at, &index) in view.order.iter().enumerate() {
        if let Some(slot) = place.get_mut(index) {
            *slot = at;
        }
    }
    let mut ranked: Vec<((u8, usize), Line)> = view
        .skipped
        .iter()
        .map(|s| ((0, 0), skipped_line(s, &view.roots, width)))
        .collect();
    for &index in &view.finished {
        let (Some(item), Some(Some(result))) = (view.items.get(index), view.results.get(index))
        else {
            continue;
        };
        let by_plan = matches!(view.verdict(index), Some(Verdict::Identical));
        let resumed = view.resumed.get(index).copied().flatten();
        let rank = match result {
            ItemResult::Failed { .. } | ItemResult::NotSent { .. } => 0,
            ItemResult::Stored {
                clash: Clash::Renamed,
                ..
            } => 1,
            _ => 2,
        };
        ranked.push((
            (rank, place.get(index).copied().unwrap_or(0)),
            outcome_line(&item.remote, result, by_plan, resumed, addr, width),
        ));
    }
    if ended {
        ranked.sort_by_key(|(rank, _)| *rank);
    }
    let lines: Vec<Line> = ranked.into_iter().map(|(_, line)| line).collect();
    let room = usize::from(area.height.saturating_sub(2));
    let first = if ended {
        view.scroll.min(lines.len().saturating_sub(room))
    } else {
        lines.len().saturating_sub(room)
    };
    let title = if ended && lines.len() > room && room > 0 {
        format!(
            " Results, problems first ({}–{} of {}) ",
            first + 1,
            (first + room).min(lines.len()),
            lines.len()
        )
    } else if ended {
        " Results ".to_string()
    } else {
        // Files, as the headline counts them; folders are made on the way.
        let is_file = |i: &usize| {
            view.items
                .get(*i)
                .is_some_and(|item| matches!(item.kind, ItemKind::File { .. }))
        };
        let done = view.finished.iter().filter(|i| is_file(i)).count();
        let files = (0..view.items.len()).filter(|i| is_file(i)).count();
        format!(" Done {done} of {files} ")
    };
    let shown: Vec<Line> = lines.into_iter().skip(first).collect();
    frame.render_widget(
        Paragraph::new(shown).block(Block::bordered().title(title)),
        area,
    );
}

/// Headline, total gauge, file gauge and results, top to bottom. Once the
/// transfer has ended no file is moving, and the results take its room.
fn areas(body: Rect, ended: bool) -> [Rect; 4] {
    let file = if ended { 0 } else { 3 };
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(file),
        Constraint::Fill(1),
    ])
    .areas(body)
}

/// Rows of the summary's results that fit inside their box.
pub(super) fn results_rows(body: Rect) -> usize {
    usize::from(areas(body, true)[3].height.saturating_sub(2))
}

/// One finished file. `by_plan`: left out because the plan found it
/// identical; `resumed`: where its upload picked up. Fitted to `room`
/// columns.
fn outcome_line(
    remote: &str,
    result: &ItemResult,
    by_plan: bool,
    resumed: Option<u64>,
    addr: &str,
    room: usize,
) -> Line<'static> {
    let (mark, color, mut what) = match result {
        ItemResult::Stored { .. } if by_plan => ("=", Color::Green, "identical, skipped".into()),
        ItemResult::Stored {
            stored_as, clash, ..
        } => match clash {
            Clash::Renamed => ("✓", Color::Yellow, format!("renamed to {stored_as}")),
            Clash::Overwritten => ("✓", Color::Green, "stored, replacing the old file".into()),
            Clash::Identical => ("=", Color::Green, "already there, identical".into()),
            Clash::None if stored_as != remote => {
                ("✓", Color::Green, format!("stored as {stored_as}"))
            }
            Clash::None => ("✓", Color::Green, "stored".into()),
        },
        ItemResult::Folder { .. } => ("✓", Color::Green, "folder created".into()),
        ItemResult::Failed { reason } => (
            "✗",
            Color::Red,
            format!("failed: {}", without_addr(reason, addr)),
        ),
        ItemResult::NotSent { reason } => (
            "·",
            Color::DarkGray,
            format!("not sent: {}", without_addr(reason, addr)),
        ),
    };
    if let (ItemResult::Stored { .. }, Some(offset)) = (result, resumed) {
        what.push_str(&format!(" (resumed at {})", bytes(offset)));
    }
    let mark = format!("{mark} ");
    let (name, note) = fit_name_and_note(
        &escape_for_display(remote),
        &format!("  {what}"),
        room.saturating_sub(Span::raw(mark.as_str()).width()),
    );
    Line::from(vec![
        Span::styled(mark, Style::new().fg(color).bold()),
        Span::raw(name),
        Span::styled(note, Style::new().fg(color)),
    ])
}
