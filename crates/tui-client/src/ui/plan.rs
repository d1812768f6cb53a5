//! The plan screen: what the server says it would do with each file, with
//! totals, shown before any byte moves. Enter sends, Esc goes back.

use ferry_proto::path::escape_for_display;
use ferry_proto::{Clash, Verdict};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::bytes;
use super::{cut_middle, skipped_line, without_addr};
use crate::app::{App, Phase, PlanCounts, TransferView};
use crate::transfer::{Item, ItemKind};
use crate::words::plural;

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, view: &TransferView) {
    let [headline, totals, list, prompt] = areas(area);
    let counts = view.plan_counts();
    frame.render_widget(Paragraph::new(headline_text(app, view)), headline);
    if view.phase == Phase::Review && view.preflight_error().is_none() {
        frame.render_widget(Paragraph::new(totals_text(&counts)), totals);
    }
    draw_rows(frame, list, view);
    frame.render_widget(Paragraph::new(prompt_text(view, &counts)), prompt);
}

fn headline_text(app: &App, view: &TransferView) -> Line<'static> {
    let files = view
        .items
        .iter()
        .filter(|i| matches!(i.kind, ItemKind::File { .. }))
        .count();
    let size = bytes(view.items.iter().map(Item::size).sum());
    match (view.phase, view.preflight_error()) {
        (Phase::Planning, _) => {
            Line::raw(format!("Looking at what to send to {}…", app.addr)).bold()
        }
        (Phase::Asking, _) => Line::raw(format!(
            "Asking the server at {} what it would do with {}, {size}…",
            app.addr,
            plural(files, "file")
        ))
        .bold(),
        (_, Some(reason)) => Line::styled(
            format!(
                "Could not ask the server what it would do: {}.",
                escape_for_display(without_addr(reason, &app.addr))
            ),
            Style::new().fg(Color::Red).bold(),
        ),
        _ => Line::raw(format!(
            "Plan for {}: {}, {size}. Nothing is sent until you confirm.",
            app.addr,
            plural(files, "file")
        ))
        .bold(),
    }
}

/// "2 new · 1 identical · 1 clash · 1 resume · 1 refused".
pub(super) fn totals_text(counts: &PlanCounts) -> Line<'static> {
    let clashes = if counts.clashes == 1 {
        "clash"
    } else {
        "clashes"
    };
    let mut spans = vec![
        Span::raw(format!("{} new · ", counts.new)),
        Span::raw(format!("{} identical · ", counts.identical)),
        Span::styled(
            format!("{} {clashes}", counts.clashes),
            if counts.clashes > 0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            },
        ),
        Span::raw(format!(" · {} resume · ", counts.resume)),
        Span::styled(
            format!("{} refused", counts.refused),
            if counts.refused > 0 {
                Style::new().fg(Color::Red).bold()
            } else {
                Style::new()
            },
        ),
    ];
    if counts.folders > 0 {
        spans.push(Span::raw(format!(
            " · {}",
            plural(counts.folders, "folder")
        )));
    }
    if counts.skipped > 0 {
        spans.push(Span::raw(format!(" · {} skipped", counts.skipped)));
    }
    let left_out = match (counts.identical, counts.refused) {
        (0, 0) => None,
        (_, 0) => Some(" · not sent: identical"),
        (0, _) => Some(" · not sent: refused"),
        _ => Some(" · not sent: identical, refused"),
    };
    if let Some(note) = left_out {
        spans.push(Span::styled(note, Style::new().dark_gray()));
    }
    if counts.already_stored > 0 {
        spans.push(Span::styled(
            format!(
                " · {} already on the server from the last try",
                plural(counts.already_stored, "file")
            ),
            Style::new().dark_gray(),
        ));
    }
    Line::from(spans)
}

fn prompt_text(view: &TransferView, counts: &PlanCounts) -> Line<'static> {
    let style = Style::new().fg(Color::Yellow).bold();
    match (view.phase, view.preflight_error()) {
        (Phase::Planning | Phase::Asking, _) => {
            Line::styled("asking the server… (Esc: cancel)", Style::new().dark_gray())
        }
        (_, Some(_)) => Line::styled("Enter: send anyway, without knowing · Esc: cancel", style),
        _ if counts.to_send + counts.folders == 0 => Line::styled(
            "Nothing needs sending. Enter: finish · Esc: back to the list",
            style,
        ),
        _ => {
            let mut what = format!(
                "Enter: send {} ({}",
                plural(counts.to_send, "file"),
                bytes(counts.bytes)
            );
            if counts.resumed_bytes > 0 {
                what.push_str(&format!(", {} already there", bytes(counts.resumed_bytes)));
            }
            what.push_str(") · Esc: cancel");
            Line::styled(what, style)
        }
    }
}

fn draw_rows(frame: &mut Frame, area: Rect, view: &TransferView) {
    let mut names: Vec<String> = view
        .items
        .iter()
        .map(|item| match item.kind {
            ItemKind::Folder => format!("{}/", escape_for_display(&item.remote)),
            ItemKind::File { .. } => escape_for_display(&item.remote),
        })
        .collect();
    let width = usize::from(area.width.saturating_sub(2));
    let name_width = names
        .iter()
        .map(|n| display_width(n))
        .max()
        .unwrap_or(0)
        .min(width / 2);
    // What needs a look comes first: what cannot be sent, then clashes and
    // resumes, then the plain new files; each group by path as people
    // count.
    let mut ranked: Vec<(u8, Line)> = view
        .skipped
        .iter()
        .map(|s| (0, skipped_line(s, &view.roots, width)))
        .collect();
    for &index in &view.order {
        let (Some(item), Some(name)) = (view.items.get(index), names.get_mut(index)) else {
            continue;
        };
        let rank = match view.verdict(index) {
            Some(Verdict::Refused { .. }) => 0,
            Some(Verdict::Clash { .. } | Verdict::Resume { .. }) => 1,
            _ => 2,
        };
        // A longer name gives up its middle, so that its size and verdict
        // stay in their columns.
        let name = cut_middle(&std::mem::take(name), name_width);
        ranked.push((rank, row(view, index, item, name, name_width, width)));
    }
    ranked.sort_by_key(|(rank, _)| *rank);
    let lines: Vec<Line> = ranked.into_iter().map(|(_, line)| line).collect();
    let room = usize::from(area.height.saturating_sub(2));
    let first = view.scroll.min(lines.len().saturating_sub(room));
    let title = if lines.len() > room && room > 0 {
        format!(
            " What the server would do ({}–{} of {}) ",
            first + 1,
            (first + room).min(lines.len()),
            lines.len()
        )
    } else {
        " What the server would do ".to_string()
    };
    let shown: Vec<Line> = lines.into_iter().skip(first).collect();
    frame.render_widget(
        Paragraph::new(shown).block(Block::bordered().title(title)),
        area,
    );
}

fn row(
    view: &TransferView,
    index: usize,
    item: &Item,
    name: String,
    name_width: usize,
    width: usize,
) -> Line<'static> {
    let size = match item.kind {
        ItemKind::File { size } => bytes(size),
        ItemKind::Folder => String::new(),
    };
    let shared = view.shares_name.get(index).copied().unwrap_or(false);
    let (mark, color, what) = match (item.kind, view.verdict(index)) {
        (ItemKind::Folder, _) => ("+", Color::Green, "folder".to_string()),
        // The server judged each file alone; two of this send go to one
        // name, and the later one gets a number.
        (
            _,
            Some(
                Verdict::New
                | Verdict::Clash {
                    result: Clash::Renamed,
                    ..
                },
            ),
        ) if shared => (
            "~",
            Color::Yellow,
            "another file of this send has this name: will get a number".to_string(),
        ),
        (_, Some(verdict)) => verdict_words(verdict),
        (_, None) if view.preflight_error().is_some() => {
            ("?", Color::DarkGray, "not checked".to_string())
        }
        (_, None) => ("…", Color::DarkGray, "asking the server…".to_string()),
    };
    let pad = name_width.saturating_sub(display_width(&name));
    // Mark, name column, size column: the verdict gets what is left, and
    // gives up its middle rather than its end, which holds the new name.
    let room = width.saturating_sub(2 + name_width + 1 + 12);
    let what = cut_middle(&what, room);
    Line::from(vec![
        Span::styled(format!("{mark} "), Style::new().fg(color).bold()),
        Span::raw(format!("{name}{} ", " ".repeat(pad))),
        Span::styled(format!("{size:>10}  "), Style::new().dark_gray()),
        Span::styled(what, Style::new().fg(color)),
    ])
}

/// A verdict in plain words, with a mark and a colour for the row.
pub(super) fn verdict_words(verdict: &Verdict) -> (&'static str, Color, String) {
    match verdict {
        Verdict::New => ("+", Color::Green, "new".into()),
        Verdict::Identical => ("=", Color::DarkGray, "identical, nothing to send".into()),
        Verdict::Clash {
            result: Clash::Overwritten,
            ..
        } => ("!", Color::Yellow, "will overwrite".into()),
        Verdict::Clash {
            result: Clash::Identical,
            ..
        } => ("=", Color::DarkGray, "already there, identical".into()),
        Verdict::Clash { stored_as, .. } => (
            "~",
            Color::Yellow,
            format!("will be renamed to {}", new_name(stored_as)),
        ),
        Verdict::Resume {
            offset,
            clash,
            stored_as,
        } => {
            let then = match (clash, stored_as) {
                (Some(Clash::Overwritten), _) => ", will overwrite".to_string(),
                (Some(Clash::Renamed), Some(name)) => {
                    format!(", name taken: will be {}", new_name(name))
                }
                _ => String::new(),
            };
            (
                "↻",
                Color::Cyan,
                format!("resume at {}{then}", bytes(*offset)),
            )
        }
        Verdict::Refused { message, .. } => (
            "✗",
            Color::Red,
            format!("refused: {}", escape_for_display(message)),
        ),
    }
}

/// The name a renamed file gets, without its folders: a rename never
/// moves a file to another folder, and the row already shows which one.
fn new_name(stored_as: &str) -> String {
    escape_for_display(stored_as.rsplit('/').next().unwrap_or(stored_as))
}

/// Headline, counts, the list and the prompt, top to bottom.
fn areas(body: Rect) -> [Rect; 4] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(body)
}

/// Rows of the plan's list that fit inside its box.
pub(super) fn list_rows(body: Rect) -> usize {
    usize::from(areas(body)[2].height.saturating_sub(2))
}

/// Columns `text` takes on screen: two for most CJK characters, so that
/// the sizes after the names line up.
fn display_width(text: &str) -> usize {
    Span::raw(text).width()
}
