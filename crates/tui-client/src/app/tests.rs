//! The App driven by keys and messages, as the event loop would.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_proto::{Clash, Verdict};
use tempfile::TempDir;

use super::*;
use crate::browse::{FolderSize, SizeReport, Sizing, read_entries};
use crate::transfer::{Item, ItemKind, ItemResult, Plan, Report};

/// docs/{a.txt,b.txt}, photos/p1.jpg, notes.txt, zeta.bin, .secret
fn fixture() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir(root.join("docs")).expect("mkdir");
    fs::create_dir(root.join("photos")).expect("mkdir");
    fs::write(root.join("docs/a.txt"), b"aaaaa").expect("write");
    fs::write(root.join("docs/b.txt"), b"bbb").expect("write");
    fs::write(root.join("photos/p1.jpg"), b"jpeg").expect("write");
    fs::write(root.join("notes.txt"), b"twelve bytes").expect("write");
    fs::write(root.join("zeta.bin"), b"z").expect("write");
    fs::write(root.join(".secret"), b"s").expect("write");
    dir
}

/// Carries out folder reads the way the event loop does, synchronously,
/// and then the keys held for them.
fn perform(app: &mut App, action: Option<Action>) -> Option<Action> {
    if let Some(Action::Open { dir, select }) = &action {
        let result = read_entries(dir).map_err(|e| crate::browse::describe_error(&e));
        app.listed(dir.clone(), select.clone(), result);
        for replayed in app.replay_held_keys() {
            perform(app, Some(replayed));
        }
    }
    action
}

fn app_in(dir: &Path) -> App {
    let (mut app, open) = App::new(dir.to_path_buf(), "127.0.0.1:9");
    perform(&mut app, Some(open));
    app
}

fn press(app: &mut App, code: KeyCode) -> Option<Action> {
    let action = app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    perform(app, action)
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

fn names(app: &App) -> Vec<String> {
    app.listing.visible().map(|e| e.name.clone()).collect()
}

fn current(app: &App) -> String {
    app.listing
        .current()
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// Enter on zeta.bin (the last entry): a send of it waits for its plan.
fn planning(dir: &Path) -> App {
    let mut app = app_in(dir);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(
        press(&mut app, KeyCode::Enter).map(|a| matches!(a, Action::Send(_))),
        Some(true)
    );
    app
}

/// Enter on zeta.bin, the server finds it new, Enter again: sending.
fn running_transfer(dir: &Path) -> App {
    let mut app = planning(dir);
    let go = confirm(
        &mut app,
        plan_of(dir, &["zeta.bin"]),
        vec![Some(Verdict::New)],
    );
    assert!(matches!(go, Some(Action::Go(_))), "{go:?}");
    app
}

/// The plan arrives, then the server's verdicts; Enter confirms.
fn confirm(app: &mut App, plan: Plan, verdicts: Vec<Option<Verdict>>) -> Option<Action> {
    let now = Instant::now();
    app.transfer(TransferMsg::Planned(plan), now);
    app.transfer(TransferMsg::Checked(Ok(verdicts)), now);
    press(app, KeyCode::Enter)
}

/// The result of a file stored under its own name, with no clash.
fn stored(name: &str, bytes: u64) -> ItemResult {
    ItemResult::Stored {
        stored_as: name.into(),
        clash: Clash::None,
        bytes,
    }
}

/// The first event of a send: the server said who it is.
fn connected() -> Event {
    Event::Connected {
        server: "ferry-server/0.1.0".into(),
    }
}

fn view(app: &App) -> &TransferView {
    match &app.screen {
        Screen::Transfer(view) => view,
        Screen::Browse => panic!("not on a transfer screen"),
    }
}

#[test]
fn lists_folders_first_without_hidden_entries() {
    let dir = fixture();
    let app = app_in(dir.path());
    assert_eq!(names(&app), ["docs", "photos", "notes.txt", "zeta.bin"]);
    assert_eq!(current(&app), "docs");
}

#[test]
fn movement_keys_move_and_stop_at_the_ends() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(current(&app), "photos");
    press(&mut app, KeyCode::Down);
    assert_eq!(current(&app), "notes.txt");
    press(&mut app, KeyCode::Char('k'));
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    assert_eq!(current(&app), "docs");
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(current(&app), "docs");
    press(&mut app, KeyCode::End);
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Home);
    assert_eq!(current(&app), "docs");
    press(&mut app, KeyCode::PageDown);
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::PageUp);
    assert_eq!(current(&app), "docs");
}

#[test]
fn opening_a_folder_and_going_back_puts_the_cursor_where_it_was() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('j'));
    let opened = press(&mut app, KeyCode::Enter);
    assert_eq!(
        opened,
        Some(Action::Open {
            dir: dir.path().join("photos"),
            select: None
        })
    );
    assert_eq!(app.listing.dir(), dir.path().join("photos"));
    assert_eq!(names(&app), ["p1.jpg"]);

    press(&mut app, KeyCode::Backspace);
    assert_eq!(app.listing.dir(), dir.path());
    assert_eq!(current(&app), "photos");

    for open in [KeyCode::Char('l'), KeyCode::Right] {
        press(&mut app, open);
        assert_eq!(app.listing.dir(), dir.path().join("photos"));
        press(&mut app, KeyCode::Char('h'));
        assert_eq!(current(&app), "photos");
    }
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Left);
    assert_eq!(app.listing.dir(), dir.path());
    assert_eq!(current(&app), "photos");
}

#[test]
fn a_stale_listing_does_not_replace_the_one_asked_for() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    let open_docs = app.handle_key(KeyEvent::from(KeyCode::Enter));
    assert!(matches!(open_docs, Some(Action::Open { .. })));
    app.listed(dir.path().join("photos"), None, Ok(Vec::new()));
    assert_eq!(app.listing.dir(), dir.path());
}

#[cfg(unix)]
#[test]
fn a_folder_that_cannot_be_opened_says_so_and_stays_put() {
    use std::os::unix::fs::PermissionsExt;
    let dir = fixture();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).expect("mkdir");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    if fs::read_dir(&locked).is_ok() {
        // Running as root: permissions do not apply.
        return;
    }
    let mut app = app_in(dir.path());
    assert!(app.listing.select_name("locked"));
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.listing.dir(), dir.path());
    let status = app.status.clone().expect("a status");
    assert!(status.is_error);
    assert_eq!(status.text, "Cannot open locked: permission denied");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");
}

/// Keys typed while a folder is being read are for that folder: `l` then
/// Space marks its first entry, not the folder left behind, and `l a`
/// marks what is in it, not everything beside it.
#[test]
fn keys_typed_while_a_folder_opens_wait_for_it() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    assert_eq!(current(&app), "docs");
    // The event loop reads folders on a thread: nothing is listed until
    // `listed` is called below, and these keys arrive before that.
    let open = app.handle_key(KeyEvent::from(KeyCode::Char('l')));
    assert!(matches!(&open, Some(Action::Open { dir: d, .. }) if *d == dir.path().join("docs")));
    assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char('j'))), None);
    assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char(' '))), None);
    assert!(app.marks.is_empty(), "nothing is marked on the old list");
    assert_eq!(
        current(&app),
        "docs",
        "the cursor did not move there either"
    );
    let entries = read_entries(&dir.path().join("docs")).expect("read");
    app.listed(dir.path().join("docs"), None, Ok(entries));
    assert!(app.replay_held_keys().is_empty());
    assert_eq!(app.marks.paths(), [dir.path().join("docs/b.txt")]);

    // Held keys that open another folder: the rest wait for that one too.
    let mut app = app_in(dir.path());
    app.handle_key(KeyEvent::from(KeyCode::Char('l')));
    app.handle_key(KeyEvent::from(KeyCode::Char('h')));
    app.handle_key(KeyEvent::from(KeyCode::Char('a')));
    let entries = read_entries(&dir.path().join("docs")).expect("read");
    app.listed(dir.path().join("docs"), None, Ok(entries));
    let back = app.replay_held_keys();
    assert!(matches!(&back[..], [Action::Open { dir: d, .. }] if d == dir.path()));
    assert!(app.marks.is_empty(), "`a` waits for the folder `h` opens");
    perform(&mut app, back.into_iter().next());
    assert_eq!(app.listing.dir(), dir.path());
    assert_eq!(app.marks.paths().len(), names(&app).len());

    // Esc gives up on a folder that is slow to come: the list on screen
    // stays and takes keys again, and the late listing is ignored.
    let mut app = app_in(dir.path());
    app.handle_key(KeyEvent::from(KeyCode::Char('l')));
    app.handle_key(KeyEvent::from(KeyCode::Char('j')));
    app.handle_key(KeyEvent::from(KeyCode::Esc));
    app.handle_key(KeyEvent::from(KeyCode::Char('j')));
    assert_eq!(current(&app), "photos");
    let entries = read_entries(&dir.path().join("docs")).expect("read");
    app.listed(dir.path().join("docs"), None, Ok(entries));
    assert!(app.replay_held_keys().is_empty());
    assert_eq!(app.listing.dir(), dir.path());
    assert_eq!(current(&app), "photos");

    // A folder that cannot be read drops what was typed for it.
    let mut app = app_in(dir.path());
    app.handle_key(KeyEvent::from(KeyCode::Char('l')));
    app.handle_key(KeyEvent::from(KeyCode::Char(' ')));
    app.listed(
        dir.path().join("docs"),
        None,
        Err("permission denied".into()),
    );
    assert!(app.replay_held_keys().is_empty());
    assert!(app.marks.is_empty());

    // Quitting never waits.
    let mut app = app_in(dir.path());
    app.handle_key(KeyEvent::from(KeyCode::Char('l')));
    assert_eq!(
        app.handle_key(KeyEvent::from(KeyCode::Char('q'))),
        Some(Action::Quit)
    );
}

#[test]
fn going_up_from_the_root_is_a_message_not_a_crash() {
    let (mut app, open) = App::new(PathBuf::from("/"), "x:1");
    perform(&mut app, Some(open));
    assert_eq!(press(&mut app, KeyCode::Char('h')), None);
    assert!(app.status.is_some());
}

#[test]
fn space_marks_and_moves_down_and_marks_survive_changing_folder() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Char('k'));
    press(&mut app, KeyCode::Char(' '));
    assert!(app.marks.contains(&dir.path().join("notes.txt")));
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.marks.len(), 2);

    press(&mut app, KeyCode::Char('g'));
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.marks.len(), 3);
    press(&mut app, KeyCode::Char('h'));
    assert_eq!(app.marks.len(), 3);
    let totals = app.marks.totals(&app.sizes);
    assert_eq!((totals.files, totals.bytes), (3, 12 + 1 + 5));

    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Char(' '));
    assert!(!app.marks.contains(&dir.path().join("zeta.bin")));
}

#[test]
fn marking_a_folder_asks_for_its_size_first_and_only_once() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    // Listing the folder already queued docs/ as background work; a
    // mark makes it urgent.
    assert_eq!(
        app.sizes.get(&dir.path().join("docs")),
        Some(&Sizing::Pending)
    );
    let action = press(&mut app, KeyCode::Char(' '));
    assert_eq!(action, Some(Action::SizeNow(vec![dir.path().join("docs")])));
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(press(&mut app, KeyCode::Char(' ')), None, "unmarked");
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(
        press(&mut app, KeyCode::Char(' ')),
        None,
        "already asked for"
    );
    // Background work on it being dropped does not lose the urgent walk.
    app.sizing(SizeReport::Dropped {
        path: dir.path().join("docs"),
    });
    assert!(app.marks.totals(&app.sizes).sizing);
    app.sizing(SizeReport::Measured {
        path: dir.path().join("docs"),
        size: FolderSize {
            files: 2,
            bytes: 8,
            unreadable: 0,
        },
        complete: true,
    });
    let totals = app.marks.totals(&app.sizes);
    assert_eq!((totals.files, totals.bytes, totals.sizing), (2, 8, false));
}

#[test]
fn listing_a_folder_asks_for_background_sizes_of_its_folders() {
    let dir = fixture();
    let (mut app, open) = App::new(dir.path().to_path_buf(), "x:1");
    let Action::Open { dir: path, select } = open else {
        panic!("starts by opening")
    };
    let entries = read_entries(&path).expect("read");
    let action = app.listed(path, select, Ok(entries));
    assert_eq!(
        action,
        Some(Action::SizeInBackground(vec![
            dir.path().join("docs"),
            dir.path().join("photos")
        ]))
    );
}

#[test]
fn a_marks_everything_visible_and_u_clears_all_marks() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('a'));
    assert_eq!(app.marks.len(), 4);
    assert!(!app.marks.contains(&dir.path().join(".secret")));
    press(&mut app, KeyCode::Char('u'));
    assert!(app.marks.is_empty());

    press(&mut app, KeyCode::Char('/'));
    typed(&mut app, "txt");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('a'));
    assert_eq!(app.marks.paths(), [dir.path().join("notes.txt")]);
}

#[test]
fn filter_narrows_as_you_type_esc_clears_enter_keeps() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.input, Input::Filter);
    typed(&mut app, "ot");
    assert_eq!(names(&app), ["photos", "notes.txt"]);
    // Keys that would move or quit are text while filtering.
    typed(&mut app, "q");
    assert_eq!(names(&app), Vec::<String>::new());
    press(&mut app, KeyCode::Backspace);
    assert_eq!(names(&app), ["photos", "notes.txt"]);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.input, Input::Normal);
    assert_eq!(app.listing.filter(), "");
    assert_eq!(names(&app).len(), 4);

    press(&mut app, KeyCode::Char('/'));
    typed(&mut app, "zeta");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.input, Input::Normal);
    assert_eq!(names(&app), ["zeta.bin"]);
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Esc);
    assert_eq!(names(&app).len(), 4);
}

#[test]
fn dot_toggles_hidden_entries() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('.'));
    assert!(names(&app).contains(&".secret".to_string()));
    press(&mut app, KeyCode::Char('.'));
    assert!(!names(&app).contains(&".secret".to_string()));
}

#[test]
fn enter_on_a_file_sends_just_it_when_nothing_is_marked() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Some(Action::Send(vec![dir.path().join("zeta.bin")]))
    );
    // Nothing moves before the plan is confirmed.
    assert_eq!(view(&app).phase, Phase::Planning);
    assert!(!app.transfer_running());
}

#[test]
fn enter_on_a_file_sends_the_marked_set_when_there_is_one() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char(' ')); // docs
    press(&mut app, KeyCode::Char('j')); // notes.txt
    press(&mut app, KeyCode::Char(' ')); // notes.txt marked, on zeta.bin
    assert_eq!(current(&app), "zeta.bin");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Some(Action::Send(vec![
            dir.path().join("docs"),
            dir.path().join("notes.txt")
        ]))
    );
}

#[test]
fn s_sends_marks_and_says_so_when_there_are_none() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    assert_eq!(press(&mut app, KeyCode::Char('s')), None);
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("Nothing is marked"))
    );
    assert!(!app.transfer_running());
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(
        press(&mut app, KeyCode::Char('s')),
        Some(Action::Send(vec![dir.path().join("docs")]))
    );
}

#[test]
fn q_quits_at_once_when_idle_but_asks_during_a_transfer() {
    let dir = fixture();
    let app = app_in(dir.path());
    assert_eq!(
        app.clone().handle_key(KeyEvent::from(KeyCode::Char('q'))),
        Some(Action::Quit)
    );

    let mut app = running_transfer(dir.path());
    assert_eq!(press(&mut app, KeyCode::Char('q')), None);
    assert_eq!(app.input, Input::ConfirmQuit);
    assert_eq!(press(&mut app, KeyCode::Char('n')), None);
    assert_eq!(app.input, Input::Normal);
    assert!(app.transfer_running());
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(press(&mut app, KeyCode::Char('y')), Some(Action::Quit));
}

#[test]
fn ctrl_c_always_quits() {
    let dir = fixture();
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    let mut app = running_transfer(dir.path());
    assert_eq!(app.handle_key(ctrl_c), Some(Action::Quit));
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.handle_key(ctrl_c), Some(Action::Quit));
}

fn plan_of(dir: &Path, names: &[&str]) -> Plan {
    Plan::build(
        &names.iter().map(|n| dir.join(n)).collect::<Vec<_>>(),
        false,
    )
}

#[test]
fn tab_browses_while_sending_and_brings_the_transfer_back() {
    let dir = fixture();
    let mut app = running_transfer(dir.path());
    let now = Instant::now();
    app.transfer(TransferMsg::Progress(connected()), now);
    assert_eq!(press(&mut app, KeyCode::Tab), None);
    assert!(matches!(app.screen, Screen::Browse));
    assert!(app.transfer_running());
    // The list works as usual meanwhile.
    assert_eq!(current(&app), "zeta.bin");
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(current(&app), "notes.txt");
    press(&mut app, KeyCode::Char(' '));
    assert!(!app.marks.is_empty());
    // One transfer at a time: a second send waits for this one.
    assert_eq!(press(&mut app, KeyCode::Char('s')), None);
    assert!(matches!(app.screen, Screen::Browse));
    let status = app
        .status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default();
    assert!(status.contains("still running"), "{status}");
    // Quitting from the list asks first, as on the transfer screen.
    assert_eq!(press(&mut app, KeyCode::Char('q')), None);
    assert_eq!(app.input, Input::ConfirmQuit);
    press(&mut app, KeyCode::Char('n'));
    // What the sender reports reaches the transfer behind the list.
    let finished = Event::Finished {
        index: 0,
        result: stored("zeta.bin", 5),
    };
    app.transfer(TransferMsg::Progress(finished), now);
    assert_eq!(press(&mut app, KeyCode::Tab), None);
    assert!(view(&app).results[0].is_some());
    assert!(app.behind.is_none());
}

/// The transfer of `running_transfer` ends: zeta.bin stored.
fn zeta_sent(app: &mut App) {
    app.transfer(
        TransferMsg::Done(Report {
            results: vec![stored("zeta.bin", 5)],
            bytes_sent: 5,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        }),
        Instant::now(),
    );
}

#[test]
fn a_transfer_that_ends_behind_the_list_keeps_its_summary_for_tab() {
    let dir = fixture();
    let mut app = running_transfer(dir.path());
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(app.input, Input::ConfirmQuit);
    zeta_sent(&mut app);
    assert!(matches!(app.screen, Screen::Browse));
    assert!(!app.transfer_running());
    // Nothing is left to cancel: the question goes away.
    assert_eq!(app.input, Input::Normal);
    // A "still running" notice goes too, for the line saying how it ended.
    let mut app = running_transfer(dir.path());
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Enter);
    let notice = app
        .status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default();
    assert!(notice.contains("still running"), "{notice}");
    zeta_sent(&mut app);
    assert_eq!(app.status, None);
    let mut app = running_transfer(dir.path());
    press(&mut app, KeyCode::Tab);
    zeta_sent(&mut app);
    // Tab shows the summary; any key then goes back to the list.
    press(&mut app, KeyCode::Tab);
    assert_eq!(view(&app).phase, Phase::Ended { cancelled: false });
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.screen, Screen::Browse));
    assert!(app.behind.is_none());
    // Once ended, a new send may start from the list.
    let mut app = running_transfer(dir.path());
    press(&mut app, KeyCode::Tab);
    zeta_sent(&mut app);
    assert!(matches!(
        press(&mut app, KeyCode::Enter),
        Some(Action::Send(_))
    ));
    assert!(app.behind.is_none());
    assert_eq!(view(&app).phase, Phase::Planning);
}

#[test]
fn esc_cancels_a_running_transfer_and_the_summary_counts_what_was_not_sent() {
    let dir = fixture();
    let mut app = running_transfer(dir.path());
    let now = Instant::now();
    assert_eq!(press(&mut app, KeyCode::Esc), Some(Action::CancelTransfer));
    assert!(matches!(&app.screen, Screen::Transfer(t) if t.phase == Phase::Cancelling));
    // A second Esc while stopping does nothing more.
    assert_eq!(press(&mut app, KeyCode::Esc), None);

    let not_sent = ItemResult::NotSent {
        reason: "cancelled".into(),
    };
    app.transfer(
        TransferMsg::Done(Report {
            results: vec![not_sent],
            bytes_sent: 0,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: true,
        }),
        now,
    );
    let Screen::Transfer(view) = &app.screen else {
        panic!("the summary stays up")
    };
    assert_eq!(view.phase, Phase::Ended { cancelled: true });
    assert_eq!((view.counts().sent(), view.counts().unsent()), (0, 1));
    assert!(!app.transfer_running());
    // The summary stays until a key, and that key only goes back.
    assert_eq!(press(&mut app, KeyCode::Esc), None);
    assert!(matches!(app.screen, Screen::Browse));
}

#[test]
fn marks_of_what_was_fully_sent_are_cleared_and_the_rest_stay() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char(' ')); // docs
    press(&mut app, KeyCode::Char(' ')); // photos
    press(&mut app, KeyCode::Char(' ')); // notes.txt
    press(&mut app, KeyCode::Char('s'));
    let now = Instant::now();
    let plan = plan_of(dir.path(), &["docs", "notes.txt", "photos"]);
    let results: Vec<ItemResult> = plan
        .items
        .iter()
        .map(|item| match item.remote.as_str() {
            "docs/b.txt" => ItemResult::Failed {
                reason: "the server's disk is full".into(),
            },
            other => stored(other, 1),
        })
        .collect();
    assert_eq!(results.len(), 4);
    app.transfer(TransferMsg::Planned(plan), now);
    app.transfer(
        TransferMsg::Done(Report {
            results,
            bytes_sent: 10,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        }),
        now,
    );
    assert_eq!(app.marks.paths(), [dir.path().join("docs")]);
}

/// A folder whose every file was stored loses its mark even when something
/// in it was skipped: sending it again would store its files twice.
#[cfg(unix)]
#[test]
fn a_folder_sent_whole_but_for_what_was_skipped_is_unmarked() {
    let dir = fixture();
    std::os::unix::fs::symlink(dir.path().join("notes.txt"), dir.path().join("docs/link"))
        .expect("symlink");
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char(' ')); // docs
    press(&mut app, KeyCode::Char('s'));
    let plan = plan_of(dir.path(), &["docs"]);
    assert_eq!(plan.skipped.len(), 1, "the symlink is skipped");
    let results: Vec<ItemResult> = plan
        .items
        .iter()
        .map(|item| stored(&item.remote, 1))
        .collect();
    let now = Instant::now();
    app.transfer(TransferMsg::Planned(plan), now);
    app.transfer(
        TransferMsg::Done(Report {
            results,
            bytes_sent: 8,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        }),
        now,
    );
    assert!(app.marks.is_empty(), "{:?}", app.marks.paths());
}

#[test]
fn marks_set_while_a_transfer_runs_behind_the_list_stay_after_it() {
    let dir = fixture();
    let mut app = running_transfer(dir.path()); // zeta.bin, unmarked
    press(&mut app, KeyCode::Tab);
    assert_eq!(current(&app), "zeta.bin");
    // Marked again for the next send while this one still runs.
    press(&mut app, KeyCode::Char(' '));
    zeta_sent(&mut app);
    assert_eq!(app.marks.paths(), [dir.path().join("zeta.bin")]);
    // The next send, of what is marked, clears it as usual.
    assert!(matches!(
        press(&mut app, KeyCode::Char('s')),
        Some(Action::Send(_))
    ));
    let go = confirm(
        &mut app,
        plan_of(dir.path(), &["zeta.bin"]),
        vec![Some(Verdict::New)],
    );
    assert!(matches!(go, Some(Action::Go(_))), "{go:?}");
    zeta_sent(&mut app);
    assert!(app.marks.is_empty());
}

#[test]
fn progress_events_move_the_gauges_and_fill_the_finished_list() {
    let dir = fixture();
    let mut app = planning(dir.path());
    let t0 = Instant::now();
    let plan = Plan {
        items: vec![
            Item {
                local: dir.path().join("a"),
                remote: "a".into(),
                kind: ItemKind::File { size: 100 },
            },
            Item {
                local: dir.path().join("b"),
                remote: "b".into(),
                kind: ItemKind::File { size: 300 },
            },
        ],
        skipped: Vec::new(),
        already_stored: Vec::new(),
    };
    let go = confirm(&mut app, plan, vec![Some(Verdict::New), Some(Verdict::New)]);
    assert!(matches!(go, Some(Action::Go(_))));
    let events = [
        connected(),
        Event::Started { index: 0 },
        Event::Progress {
            index: 0,
            item_sent: 100,
            total_sent: 100,
        },
        Event::Started { index: 1 },
        Event::Finished {
            index: 0,
            result: stored("a", 100),
        },
        Event::Progress {
            index: 1,
            item_sent: 100,
            total_sent: 200,
        },
    ];
    for event in events {
        app.transfer(TransferMsg::Progress(event), t0 + Duration::from_secs(1));
    }
    assert_eq!(
        app.server,
        ServerState::Connected("ferry-server/0.1.0".into())
    );
    let Screen::Transfer(view) = &app.screen else {
        panic!("transfer screen")
    };
    assert_eq!(view.current, Some(1));
    assert_eq!(view.total.as_ref().map(Meter::ratio), Some(0.5));
    assert_eq!(view.file.as_ref().map(Meter::done), Some(100));
    assert_eq!(view.finished, [0]);
}

#[test]
fn an_unreachable_server_is_the_stop_reason() {
    let mut view = TransferView::new(Vec::new());
    view.planned(Plan {
        items: vec![Item {
            local: PathBuf::from("/x"),
            remote: "x".into(),
            kind: ItemKind::File { size: 1 },
        }],
        skipped: Vec::new(),
        already_stored: Vec::new(),
    });
    view.finish(Report {
        results: vec![ItemResult::NotSent {
            reason: "cannot reach 127.0.0.1:9: connection refused".into(),
        }],
        bytes_sent: 0,
        bytes_resumed: 0,
        elapsed: Duration::ZERO,
        cancelled: false,
    });
    assert_eq!(
        view.stop_reason(),
        Some("cannot reach 127.0.0.1:9: connection refused")
    );
}

fn file(dir: &Path, name: &str, size: u64) -> Item {
    Item {
        local: dir.join(name),
        remote: name.into(),
        kind: ItemKind::File { size },
    }
}

/// On the plan screen for new.txt (new), same.txt (identical),
/// bad.txt (refused) and big.iso (to resume at 1 KiB).
fn reviewing(dir: &Path) -> App {
    let mut app = planning(dir);
    let now = Instant::now();
    let plan = Plan {
        items: vec![
            file(dir, "new.txt", 10),
            file(dir, "same.txt", 20),
            file(dir, "bad.txt", 30),
            file(dir, "big.iso", 4096),
        ],
        skipped: Vec::new(),
        already_stored: Vec::new(),
    };
    app.transfer(TransferMsg::Planned(plan), now);
    assert_eq!(view(&app).phase, Phase::Asking);
    app.transfer(
        TransferMsg::Checked(Ok(vec![
            Some(Verdict::New),
            Some(Verdict::Identical),
            Some(Verdict::Refused {
                code: ferry_proto::ErrorCode::BadName,
                message: "the name is not allowed".into(),
            }),
            Some(Verdict::Resume {
                offset: 1024,
                clash: None,
                stored_as: None,
            }),
        ])),
        now,
    );
    assert_eq!(view(&app).phase, Phase::Review);
    app
}

#[test]
fn the_plan_screen_sends_on_enter_and_leaves_out_refused_and_identical_files() {
    let dir = fixture();
    for key in [KeyCode::Enter, KeyCode::Char('y')] {
        let mut app = reviewing(dir.path());
        let counts = view(&app).plan_counts();
        assert_eq!(
            (counts.new, counts.identical, counts.refused, counts.resume),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (counts.to_send, counts.bytes, counts.resumed_bytes),
            (2, 4106, 1024)
        );
        assert!(!app.transfer_running());

        let Some(Action::Go(dispatch)) = press(&mut app, key) else {
            panic!("{key:?} sends")
        };
        assert_eq!(dispatch.send, [0, 3]);
        let outgoing: Vec<String> = dispatch.outgoing().into_iter().map(|i| i.remote).collect();
        assert_eq!(outgoing, ["new.txt", "big.iso"]);
        assert!(app.transfer_running());

        // What the plan settled is in the finished list already.
        let view = view(&app);
        assert_eq!(view.phase, Phase::Sending);
        assert_eq!(view.finished, [1, 2]);
        assert_eq!(
            view.results[2],
            Some(ItemResult::Failed {
                reason: "the name is not allowed".into()
            })
        );
        assert!(matches!(
            view.results[1],
            Some(ItemResult::Stored {
                clash: Clash::Identical,
                bytes: 0,
                ..
            })
        ));
        assert_eq!(view.outgoing_bytes(), 4106);
    }
}

#[test]
fn esc_or_n_on_the_plan_goes_back_to_the_list_and_sends_nothing() {
    let dir = fixture();
    for key in [KeyCode::Esc, KeyCode::Char('n')] {
        let mut app = reviewing(dir.path());
        assert_eq!(press(&mut app, key), Some(Action::Abandon));
        assert!(matches!(app.screen, Screen::Browse));
        assert!(
            app.status
                .as_ref()
                .is_some_and(|s| s.text.contains("nothing was sent"))
        );
    }
    // Also while the server is still being asked.
    let mut app = planning(dir.path());
    app.transfer(
        TransferMsg::Planned(plan_of(dir.path(), &["zeta.bin"])),
        Instant::now(),
    );
    assert_eq!(view(&app).phase, Phase::Asking);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        None,
        "no plan to confirm yet"
    );
    assert_eq!(press(&mut app, KeyCode::Esc), Some(Action::Abandon));
    assert!(matches!(app.screen, Screen::Browse));
    // Late answers to the abandoned plan change nothing.
    app.transfer(TransferMsg::Checked(Ok(vec![None])), Instant::now());
    assert!(matches!(app.screen, Screen::Browse));
}

#[test]
fn when_the_server_cannot_be_asked_enter_sends_everything_anyway() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char(' ')); // docs
    press(&mut app, KeyCode::Char('s'));
    let now = Instant::now();
    app.transfer(
        TransferMsg::Planned(plan_of(dir.path(), &["docs", "zeta.bin"])),
        now,
    );
    app.transfer(
        TransferMsg::Checked(Err("the server cannot plan: unknown message".into())),
        now,
    );
    assert_eq!(
        view(&app).preflight_error(),
        Some("the server cannot plan: unknown message")
    );
    let Some(Action::Go(dispatch)) = press(&mut app, KeyCode::Enter) else {
        panic!("Enter sends anyway")
    };
    assert_eq!(dispatch.send, [0, 1, 2]);
    assert!(dispatch.decided.iter().all(Option::is_none));
}

#[test]
fn dispatch_numbers_events_and_results_as_in_the_whole_plan() {
    let dir = fixture();
    let mut app = reviewing(dir.path());
    let Some(Action::Go(dispatch)) = press(&mut app, KeyCode::Enter) else {
        panic!("sends")
    };
    assert_eq!(
        dispatch.event(Event::Started { index: 1 }),
        Event::Started { index: 3 }
    );
    let report = dispatch.report(Report {
        results: vec![stored("new.txt", 1), stored("big.iso", 1)],
        bytes_sent: 3082,
        bytes_resumed: 1024,
        elapsed: Duration::from_secs(1),
        cancelled: false,
    });
    assert_eq!(report.results.len(), 4);
    assert_eq!(report.results[0], stored("new.txt", 1));
    assert_eq!(report.results[3], stored("big.iso", 1));
    assert!(matches!(report.results[2], ItemResult::Failed { .. }));
    assert_eq!(report.bytes_resumed, 1024);
}

#[test]
fn a_resumed_file_starts_at_its_offset_and_is_not_whole_until_confirmed() {
    let dir = fixture();
    let mut app = reviewing(dir.path());
    press(&mut app, KeyCode::Enter);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    for event in [
        connected(),
        Event::Started { index: 0 },
        Event::Progress {
            index: 0,
            item_sent: 10,
            total_sent: 10,
        },
        Event::Finished {
            index: 0,
            result: stored("new.txt", 10),
        },
        Event::Started { index: 3 },
        Event::Resumed {
            index: 3,
            offset: 1024,
        },
    ] {
        app.transfer(TransferMsg::Progress(event), t0);
    }
    let v = view(&app);
    let file = v.file.as_ref().expect("a file gauge");
    assert_eq!((file.done(), file.resumed()), (1024, 1024));
    assert_eq!(v.resumed[3], Some(1024));
    assert_eq!(v.total.as_ref().map(Meter::done), Some(1034));

    app.transfer(
        TransferMsg::Progress(Event::Progress {
            index: 3,
            item_sent: 4096,
            total_sent: 4106,
        }),
        t1,
    );
    let v = view(&app);
    let total = v.total.as_ref().expect("a total gauge");
    assert_eq!(total.ratio(), 1.0, "every byte is out");
    // Only what moved counts for the rate: 3082 bytes in a second.
    assert_eq!(total.rate(t1).map(|r| r.round()), Some(3082.0));
    assert!(!v.all_confirmed(), "big.iso is not confirmed yet");
    assert!(!v.current_confirmed());
    assert_eq!(v.stored_bytes(), 10);

    app.transfer(
        TransferMsg::Progress(Event::Finished {
            index: 3,
            result: stored("big.iso", 4096),
        }),
        t1,
    );
    let v = view(&app);
    assert!(v.all_confirmed());
    assert!(v.current_confirmed());
    assert_eq!(v.stored_bytes(), 4106);
}

fn ended_with(app: &mut App, results: Vec<ItemResult>) {
    app.transfer(
        TransferMsg::Done(Report {
            results,
            bytes_sent: 0,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        }),
        Instant::now(),
    );
}

#[test]
fn r_retries_only_the_failed_files_and_only_when_there_are_some() {
    let dir = fixture();
    let mut app = reviewing(dir.path());
    press(&mut app, KeyCode::Enter);
    let ok = stored("new.txt", 10);
    let lost = ItemResult::NotSent {
        reason: "the connection was lost".into(),
    };
    ended_with(
        &mut app,
        vec![
            ok.clone(),
            ok.clone(),
            ItemResult::Failed {
                reason: "the name is not allowed".into(),
            },
            lost,
        ],
    );
    assert!(view(&app).can_retry());
    let Some(Action::Retry(record)) = press(&mut app, KeyCode::Char('r')) else {
        panic!("r retries")
    };
    assert_eq!(record.server, "127.0.0.1:9");
    let remotes: Vec<&str> = record.files.iter().map(|f| f.remote.as_str()).collect();
    assert_eq!(remotes, ["bad.txt", "big.iso"]);
    assert_eq!(record.files[1].local, dir.path().join("big.iso"));
    // The retry goes through the plan screen again.
    assert_eq!(view(&app).phase, Phase::Planning);

    // Nothing failed: r is just a key that goes back to the list.
    let mut app = reviewing(dir.path());
    press(&mut app, KeyCode::Enter);
    ended_with(&mut app, vec![ok.clone(), ok.clone(), ok.clone(), ok]);
    // (The plan had refused bad.txt; the report said otherwise.)
    assert!(!view(&app).can_retry());
    assert_eq!(press(&mut app, KeyCode::Char('r')), None);
    assert!(matches!(app.screen, Screen::Browse));
}

#[test]
fn quitting_before_anything_moves_needs_no_confirmation() {
    let dir = fixture();
    let mut app = reviewing(dir.path());
    assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Action::Quit));
}

/// Scrolled to the end of a long plan and confirmed, a transfer's summary
/// still opens at its top, where its failures are.
#[test]
fn the_summary_starts_at_its_top_whatever_the_plan_scroll() {
    let dir = fixture();
    let mut app = planning(dir.path());
    let now = Instant::now();
    let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
    let plan = Plan {
        items: names
            .iter()
            .map(|n| Item {
                local: dir.path().join(n),
                remote: n.clone(),
                kind: ItemKind::File { size: 1 },
            })
            .collect(),
        skipped: Vec::new(),
        already_stored: Vec::new(),
    };
    app.transfer(TransferMsg::Planned(plan), now);
    app.transfer(TransferMsg::Checked(Ok(vec![Some(Verdict::New); 40])), now);
    press(&mut app, KeyCode::Char('G'));
    assert!(view(&app).scroll > 0);
    assert!(matches!(
        press(&mut app, KeyCode::Enter),
        Some(Action::Go(_))
    ));
    assert_eq!(view(&app).scroll, 0);
}

/// A resume the server refused is taken back: the file is not shown as
/// resumed, and the total no longer counts its kept part as done.
#[test]
fn a_resume_taken_back_is_not_counted() {
    let dir = fixture();
    let mut app = running_transfer(dir.path());
    let now = Instant::now();
    for event in [
        connected(),
        Event::Started { index: 0 },
        Event::Resumed {
            index: 0,
            offset: 4,
        },
        Event::NotResumed {
            index: 0,
            offset: 4,
        },
    ] {
        app.transfer(TransferMsg::Progress(event), now);
    }
    let v = view(&app);
    assert_eq!(v.resumed[0], None);
    assert_eq!(v.total.as_ref().map(Meter::resumed), Some(0));
}

/// A plan or a transfer that could not connect updates the header at once,
/// rather than leaving "connected" up until the next probe; any other
/// failure leaves it to the probe.
#[test]
fn a_failed_connection_shows_in_the_header_at_once() {
    let dir = fixture();
    let now = Instant::now();
    let mut app = planning(dir.path());
    app.probed(Ok("ferry-server/0.1.0".into()));
    app.transfer(
        TransferMsg::Planned(plan_of(dir.path(), &["zeta.bin"])),
        now,
    );
    let refused = "cannot reach 127.0.0.1:9: connection refused (is ferry-server running there?)";
    app.transfer(TransferMsg::Checked(Err(refused.into())), now);
    assert_eq!(app.server, ServerState::Unreachable(refused.into()));

    let mut app = running_transfer(dir.path());
    app.probed(Ok("ferry-server/0.1.0".into()));
    let not_sent = |reason: &str| {
        TransferMsg::Done(Report {
            results: vec![ItemResult::NotSent {
                reason: reason.into(),
            }],
            bytes_sent: 0,
            bytes_resumed: 0,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        })
    };
    app.transfer(
        not_sent("handshake with 127.0.0.1:9 failed: the server refused: wrong token"),
        now,
    );
    assert_eq!(
        app.server,
        ServerState::Refused("the server refused: wrong token".into())
    );

    let mut app = running_transfer(dir.path());
    app.probed(Ok("ferry-server/0.1.0".into()));
    app.transfer(not_sent("the server closed the connection"), now);
    assert_eq!(
        app.server,
        ServerState::Connected("ferry-server/0.1.0".into())
    );
}

#[test]
fn r_reads_the_folder_again_keeping_filter_and_cursor() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    press(&mut app, KeyCode::Char('/'));
    typed(&mut app, "ot");
    press(&mut app, KeyCode::Enter);
    assert_eq!(names(&app), ["photos", "notes.txt"].map(String::from));
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(current(&app), "notes.txt");

    fs::write(dir.path().join("hot.txt"), b"new").expect("write");
    fs::remove_file(dir.path().join("zeta.bin")).expect("remove");
    assert_eq!(
        press(&mut app, KeyCode::Char('r')),
        Some(Action::Open {
            dir: dir.path().to_path_buf(),
            select: None
        })
    );
    assert_eq!(app.listing.filter(), "ot");
    assert_eq!(
        names(&app),
        ["photos", "hot.txt", "notes.txt"].map(String::from)
    );
    assert_eq!(current(&app), "notes.txt");

    // An entry that went away leaves the cursor at its place.
    fs::remove_file(dir.path().join("notes.txt")).expect("remove");
    press(&mut app, KeyCode::Char('r'));
    assert_eq!(names(&app), ["photos", "hot.txt"].map(String::from));
    assert_eq!(current(&app), "hot.txt");
}

#[test]
fn r_measures_unmarked_folders_again_and_leaves_marked_ones_as_marked() {
    let dir = fixture();
    let mut app = app_in(dir.path());
    let measured = |app: &mut App, folder: &str, bytes| {
        app.sizing(SizeReport::Measured {
            path: dir.path().join(folder),
            size: FolderSize {
                files: 1,
                bytes,
                unreadable: 0,
            },
            complete: true,
        });
    };
    measured(&mut app, "docs", 8);
    measured(&mut app, "photos", 4);
    // docs is first: mark it.
    assert_eq!(current(&app), "docs");
    press(&mut app, KeyCode::Char(' '));

    let action = app.handle_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
    let Some(Action::Open { dir: path, select }) = action else {
        panic!("r reads the folder again: {action:?}")
    };
    let entries = read_entries(&path).expect("read");
    assert_eq!(
        app.listed(path, select, Ok(entries)),
        Some(Action::SizeInBackground(vec![dir.path().join("photos")]))
    );
    assert!(matches!(
        app.sizes.get(&dir.path().join("docs")),
        Some(Sizing::Known(_))
    ));
}
