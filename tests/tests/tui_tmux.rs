//! End-to-end test of the terminal picker: the real `ferry` runs inside a
//! real terminal (a detached tmux session) against a real `ferry-server`,
//! and is driven with key presses exactly as a person would.
//!
//! What it proves that the unit tests cannot: the terminal is set up and
//! read correctly, the event loop moves between folders, marks, asks the
//! real server for a plan and sends on real threads, the screen shows the
//! outcome, the bytes arrive intact and the terminal is given back on quit.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use ferry_e2e::{Server, bin_path, data};

/// How long any one screen may take to appear.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A tmux server of our own (its own socket), killed on drop even when
/// the test fails half way.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a detached session of the
    /// given size.
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let socket = format!("ferry-e2e-{}-{}", std::process::id(), unique());
        let tmux = Tmux { socket };
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "ferry",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Presses keys, by tmux key name (`Space`, `Escape`, `l`...).
    fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ferry"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "tmux send-keys failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pid of the `ferry` the pane's shell runs.
    fn ferry_pid(&self) -> u32 {
        let out = self.run(&["display-message", "-p", "-t", "ferry", "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // /proc/PID/stat: "pid (comm) state ppid ..."
        fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .find_map(|stat| {
                let (pid, rest) = stat.split_once(" (")?;
                let (comm, rest) = rest.rsplit_once(") ")?;
                let ppid = rest.split_whitespace().nth(1)?;
                (comm == "ferry" && ppid == shell).then(|| pid.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no ferry under the pane's shell {shell}"))
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "ferry"]).stdout)
            .into_owned()
    }

    /// Waits until every one of `needles` is on screen; returns the screen.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {SCREEN_TIMEOUT:?} for {needles:?}; the screen was:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // tmux leaves its socket file behind when killed; ask where it is
        // first so that nothing is left in the tmux folder.
        let socket_path = self.run(&["display-message", "-p", "#{socket_path}"]);
        let _ = self.run(&["kill-server"]);
        let socket_path = String::from_utf8_lossy(&socket_path.stdout)
            .trim()
            .to_string();
        if !socket_path.is_empty() {
            let _ = fs::remove_file(socket_path);
        }
    }
}

/// A number that differs between tests of one run.
fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Quotes for `sh`: tmux runs the session's command through the shell.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn write(path: PathBuf, bytes: &[u8]) -> (PathBuf, Vec<u8>) {
    fs::write(&path, bytes).expect("write a test file");
    (path, bytes.to_vec())
}

/// Runs the picker on `root` against `server` in a 120x40 terminal. The
/// shell line keeps the pane open after ferry exits, with its exit status
/// on screen, so a crash or a bad exit is visible to the test; the list of
/// failed files goes to `home/state`, a state folder of the test's own.
fn picker(server: &Server, home: &Path, root: &Path) -> Tmux {
    picker_with(server, home, root, "")
}

/// [`picker`] with more options on ferry's command line.
fn picker_with(server: &Server, home: &Path, root: &Path, options: &str) -> Tmux {
    let command = format!(
        "XDG_STATE_HOME={} {} --to {} {options} {}; echo \"ferry exited with $?\"; sleep 60",
        quoted(&home.join("state")),
        quoted(&bin_path("ferry")),
        server.addr(),
        quoted(root),
    );
    Tmux::start(120, 40, &command)
}

/// A server started with `flags`, and an empty folder `pick` to browse in
/// a temporary home; `None`, and the test is skipped, without tmux.
fn scene(flags: &[&str]) -> Option<(Server, tempfile::TempDir, PathBuf)> {
    if !tmux_installed() {
        println!("skipped: tmux is not installed");
        return None;
    }
    let server = Server::start_with(flags);
    let home = tempfile::tempdir().expect("tempdir");
    let root = home.path().join("pick");
    fs::create_dir_all(&root).expect("mkdir");
    Some((server, home, root))
}

/// `ferry FILE` opens the file's folder with the cursor on it, and Enter
/// sends just that file.
#[test]
fn given_a_file_the_picker_opens_its_folder_on_it() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    write(root.join("a.txt"), b"a");
    let (_, b) = write(root.join("b.txt"), b"the one asked for\n");
    write(root.join("c.txt"), b"c");

    let tmux = picker(&server, home.path(), &root.join("b.txt"));
    let screen = tmux.wait_for(&["a.txt", "b.txt", "c.txt", "● connected"]);
    let cursor = screen
        .lines()
        .find(|l| l.contains('▶'))
        .unwrap_or_else(|| panic!("no cursor:\n{screen}"));
    assert!(cursor.contains("b.txt"), "{screen}");
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Enter: send 1 file"]);
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Finished: 1 stored"]);
    assert_eq!(server.files(), ["b.txt"]);
    assert_eq!(fs::read(server.dir().join("b.txt")).expect("stored"), b);
    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

#[test]
fn pick_files_in_a_subfolder_send_them_and_quit() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    write(root.join("top.txt"), b"not picked");
    let alpha = write(root.join("sub/alpha.bin"), &data(300_000, 7));
    let beta = write(root.join("sub/beta.txt"), b"beta: a small text file\n");
    write(root.join("sub/gamma.txt"), b"left behind");

    let tmux = picker(&server, home.path(), &root);

    // Folders first: the cursor starts on sub/.
    let screen = tmux.wait_for(&["sub/", "top.txt", "● connected", "Nothing marked"]);
    assert!(screen.contains(&server.addr()), "{screen}");

    tmux.press(&["l"]);
    tmux.wait_for(&["alpha.bin", "beta.txt", "gamma.txt"]);
    tmux.press(&["Space", "Space"]);
    let screen = tmux.wait_for(&["2 marked: 2 files"]);
    assert!(
        !screen.contains("top.txt"),
        "still in the top folder:\n{screen}"
    );

    // The plan comes first: the server's verdict on each file, and nothing
    // is sent until Enter.
    tmux.press(&["s"]);
    let plan = tmux.wait_for(&[
        "What the server would do",
        "2 new · 0 identical · 0 clashes · 0 resume · 0 refused",
        "Enter: send 2 files",
    ]);
    assert!(plan.contains("alpha.bin"), "{plan}");
    assert!(plan.contains("beta.txt"), "{plan}");
    assert!(
        server.files().is_empty(),
        "something arrived before the plan was confirmed: {:?}",
        server.files()
    );
    tmux.press(&["Enter"]);
    let summary = tmux.wait_for(&["Finished: 2 stored", "Total", "100%"]);
    assert!(summary.contains("alpha.bin  stored"), "{summary}");
    assert!(summary.contains("beta.txt  stored"), "{summary}");
    assert!(!summary.contains("gamma.txt"), "{summary}");

    // Only what was marked arrived, byte for byte.
    for (local, bytes) in [&alpha, &beta] {
        let name = local.file_name().expect("a file name");
        let stored = fs::read(server.dir().join(name)).expect("the file is on the server");
        assert!(
            stored == *bytes,
            "{} differs on the server",
            name.to_string_lossy()
        );
    }
    assert!(!server.dir().join("gamma.txt").exists());

    // Any key goes back to the list, with the sent files unmarked.
    tmux.press(&["Escape"]);
    tmux.wait_for(&["gamma.txt", "Nothing marked"]);

    tmux.press(&["q"]);
    let after = tmux.wait_for(&["ferry exited with 0"]);
    assert!(
        !after.contains("Nothing marked"),
        "the picker is still on screen:\n{after}"
    );
}

/// Keys typed in one go, before a folder has been read, are for that
/// folder: `l a` marks what is in sub/, never the folder left behind.
#[test]
fn keys_typed_ahead_of_a_folder_act_in_it() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    for name in ["one.txt", "two.txt", "three.txt"] {
        write(root.join("sub").join(name), b"inside");
    }
    for name in ["big-a.bin", "big-b.bin"] {
        write(root.join(name), b"beside");
    }
    let tmux = picker(&server, home.path(), &root);
    tmux.wait_for(&["sub/", "big-b.bin", "Nothing marked"]);
    // One send-keys: both keys reach the picker while sub/ is being read.
    tmux.press(&["l", "a"]);
    let screen = tmux.wait_for(&["3 marked: 3 files"]);
    assert!(screen.contains("three.txt"), "{screen}");
    assert!(!screen.contains("big-a.bin"), "{screen}");
    // And back up, then down to the first file, in one go too.
    tmux.press(&["u", "h", "j", "Space"]);
    let screen = tmux.wait_for(&["1 marked: 1 file"]);
    assert!(screen.contains("big-a.bin"), "{screen}");
    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

#[test]
fn the_plan_shows_clashes_and_refusals_and_r_retries_what_failed() {
    let Some((server, home, root)) = scene(&["--max-file-size", "100K"]) else {
        return;
    };
    fs::write(server.dir().join("taken.txt"), b"already on the server").expect("write");
    let small = write(root.join("small.txt"), b"a small file\n");
    write(root.join("taken.txt"), b"a different taken.txt\n");
    write(root.join("huge.bin"), &data(300_000, 3));

    let tmux = picker(&server, home.path(), &root);
    tmux.wait_for(&["huge.bin", "small.txt", "taken.txt", "● connected"]);
    tmux.press(&["a", "s"]);
    let plan = tmux.wait_for(&[
        "1 new · 0 identical · 1 clash · 0 resume · 1 refused",
        "Enter: send 2 files",
    ]);
    let row = |screen: &str, name: &str| {
        screen
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{screen}"))
            .to_string()
    };
    assert!(row(&plan, "small.txt").contains("new"), "{plan}");
    assert!(
        row(&plan, "taken.txt").contains("will be renamed to"),
        "{plan}"
    );
    assert!(row(&plan, "huge.bin").contains("refused:"), "{plan}");

    tmux.press(&["Enter"]);
    let summary = tmux.wait_for(&["Finished with problems", "r retry failed"]);
    assert!(row(&summary, "huge.bin").contains("failed:"), "{summary}");
    assert!(!server.dir().join("huge.bin").exists());
    let (local, bytes) = &small;
    let name = local.file_name().expect("a file name");
    assert!(fs::read(server.dir().join(name)).expect("stored") == *bytes);
    assert!(
        fs::read(server.dir().join("taken.txt")).expect("still there") == b"already on the server",
        "the clash policy (rename) must not overwrite"
    );
    // The failure is remembered for `ferry send --retry-failed`.
    let record = fs::read_to_string(home.path().join("state/ferry/failed.json"))
        .expect("the failed files are remembered");
    assert!(record.contains("huge.bin"), "{record}");
    assert!(!record.contains("small.txt"), "{record}");

    // r plans just the failed file again, through the plan screen.
    tmux.press(&["r"]);
    let again = tmux.wait_for(&["0 new · 0 identical · 0 clashes · 0 resume · 1 refused"]);
    assert!(row(&again, "huge.bin").contains("refused:"), "{again}");
    assert!(!again.contains("small.txt"), "{again}");
    tmux.press(&["Escape"]);
    tmux.wait_for(&["nothing was sent"]);

    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

/// On the plan, `i` asks again with skip-identical, for this send only: a
/// file the server already has byte for byte is then left out, where the
/// default policy would store a numbered copy of it.
#[test]
fn i_on_the_plan_leaves_out_files_the_server_already_has() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    fs::write(server.dir().join("same.txt"), b"same bytes\n").expect("write");
    fs::write(server.dir().join("other.txt"), b"older bytes\n").expect("write");
    write(root.join("same.txt"), b"same bytes\n");
    write(root.join("other.txt"), b"newer bytes\n");

    let tmux = picker(&server, home.path(), &root);
    tmux.wait_for(&["other.txt", "same.txt", "● connected"]);
    tmux.press(&["a", "s"]);
    tmux.wait_for(&[
        "0 new · 0 identical · 2 clashes",
        "i skip files already there",
    ]);
    tmux.press(&["i"]);
    let plan = tmux.wait_for(&["0 new · 1 identical · 1 clash", "Enter: send 1 file"]);
    assert!(!plan.contains("i skip files"), "{plan}");
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Finished"]);
    assert_eq!(server.files(), ["other (1).txt", "other.txt", "same.txt"]);
    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

#[test]
fn tab_browses_the_list_while_a_transfer_goes_on() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    fs::create_dir_all(root.join("later")).expect("mkdir");
    write(root.join("later/next.txt"), b"for the next send");
    // About four seconds at the capped rate: time to look around.
    let big = write(root.join("big.bin"), &data(8 << 20, 3));
    let tmux = picker_with(&server, home.path(), &root, "--limit-rate 2M");

    tmux.wait_for(&["later/", "big.bin", "● connected"]);
    tmux.press(&["j", "Enter"]);
    tmux.wait_for(&["Enter: send 1 file"]);
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Sending 1 file", "Tab browse"]);

    // Tab: the list again, with the transfer on the status line.
    tmux.press(&["Tab"]);
    tmux.wait_for(&["later/", "Sending: ", "Tab shows it", "Tab transfer"]);
    tmux.press(&["k", "l"]);
    let screen = tmux.wait_for(&["next.txt"]);
    assert!(
        !screen.contains("Finished"),
        "the transfer ended before the folder opened:\n{screen}"
    );

    // It ends behind the list; Tab shows its summary.
    tmux.wait_for(&["Finished: 1 stored · Tab shows it"]);
    tmux.press(&["Tab"]);
    tmux.wait_for(&["Finished: 1 stored", "big.bin  stored"]);
    let stored = fs::read(server.dir().join("big.bin")).expect("big.bin is on the server");
    assert!(stored == big.1, "big.bin differs on the server");

    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

/// `-L` works in the picker as in `ferry send`: a symlink is sent as what
/// it points to, where without it the plan lists it as skipped.
#[test]
fn the_picker_follows_symlinks_with_dash_l() {
    let Some((server, home, root)) = scene(&[]) else {
        return;
    };
    let outside = home.path().join("outside.txt");
    fs::write(&outside, b"pointed at").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("link.txt")).expect("symlink");

    let tmux = picker_with(&server, home.path(), &root, "-L");
    tmux.wait_for(&["link.txt", "● connected"]);
    tmux.press(&["a", "s"]);
    tmux.wait_for(&["1 new · 0 identical", "Enter: send 1 file"]);
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Finished"]);
    assert_eq!(server.read("link.txt"), b"pointed at");
    tmux.press(&["q"]);
    tmux.wait_for(&["ferry exited with 0"]);
}

/// The picker sending slow.bin (4 MiB at 512 KiB/s), for a test to
/// interrupt; `None`, and the test is skipped, without tmux.
fn sending_slowly() -> Option<(Server, tempfile::TempDir, Tmux)> {
    let (server, home, root) = scene(&[])?;
    write(root.join("slow.bin"), &data(4 << 20, 9));
    let tmux = picker_with(&server, home.path(), &root, "--limit-rate 512K");
    tmux.wait_for(&["slow.bin", "● connected"]);
    tmux.press(&["a", "s"]);
    tmux.wait_for(&["Enter: send 1 file"]);
    tmux.press(&["Enter"]);
    tmux.wait_for(&["Done 0 of 1"]);
    Some((server, home, tmux))
}

/// Closing the terminal mid-transfer (SIGHUP) stops the transfer as Ctrl-C
/// would: what was not sent is remembered for `ferry send --retry-failed`.
#[test]
fn closing_the_terminal_mid_transfer_remembers_what_was_not_sent() {
    let Some((server, home, tmux)) = sending_slowly() else {
        return;
    };
    server.expect_log("slow.bin");
    ferry_e2e::send_signal(tmux.ferry_pid(), "HUP");
    // 128 + SIGHUP's number, as a shell reports it, and what was left.
    tmux.wait_for(&["ferry exited with 129", "1 file not sent"]);
    let record = fs::read_to_string(home.path().join("state/ferry/failed.json"))
        .expect("the file not sent is remembered");
    assert!(record.contains("slow.bin"), "{record}");
    assert!(!server.dir().join("slow.bin").exists());
}

/// Ctrl-C in the middle of a transfer quits at once, and says, once the
/// screen is back, what was left unsent and how to send it.
#[test]
fn ctrl_c_mid_transfer_says_what_was_not_sent() {
    let Some((_server, _home, tmux)) = sending_slowly() else {
        return;
    };
    tmux.press(&["C-c"]);
    tmux.wait_for(&[
        "1 file not sent (ferry send --retry-failed sends them)",
        "ferry exited with 130",
    ]);
}

/// A transfer cancelled with Esc ends on its summary; quitting later, with
/// nothing running, is a plain quit: no word of a cancel, exit status 0.
#[test]
fn quitting_after_a_transfer_cancelled_with_esc_is_a_plain_quit() {
    let Some((_server, _home, tmux)) = sending_slowly() else {
        return;
    };
    tmux.press(&["Escape"]);
    tmux.wait_for(&["Cancelled"]);
    tmux.press(&["Escape"]);
    tmux.wait_for(&["slow.bin"]);
    tmux.press(&["q"]);
    let after = tmux.wait_for(&["ferry exited with 0"]);
    assert!(!after.contains("cancelled"), "{after}");
}
