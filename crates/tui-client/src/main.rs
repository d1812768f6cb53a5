//! `ferry`: browse and send files to a Ferry server, or `ferry send` them
//! without the picker.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_client::headless::Finish;
use ferry_client::transfer::link::server_addr;
use ferry_client::transfer::pace::parse_rate;
use ferry_client::transfer::{Options, Trust};
use ferry_client::words::plural;
use ferry_proto::OnClash;

/// Send files to a Ferry server.
///
/// With no subcommand, opens a terminal file picker on DIR: mark files and
/// folders, send them, and watch the progress.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    subcommand_negates_reqs = true,
    override_usage = "ferry [OPTIONS] [DIR]\n       ferry [OPTIONS] send [OPTIONS] [PATHS]..."
)]
struct Cli {
    /// Server address, HOST:PORT (the port is 8090 when left out).
    #[arg(
        long,
        global = true,
        env = "FERRY_SERVER",
        default_value = "127.0.0.1:8090",
        value_parser = server_addr
    )]
    to: String,
    /// Cap the sending rate, like curl: 500K, 20M, 1G (bytes per second).
    #[arg(long, global = true, value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// What the server should do when a name is already taken.
    #[arg(long, global = true, value_enum, default_value_t = ClashArg::Rename)]
    on_clash: ClashArg,
    /// The token the server requires (or set FERRY_TOKEN, which other
    /// users cannot see in the process list).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Talk to the server over TLS. Its certificate is pinned on first
    /// use (like SSH's known_hosts) and a changed one is refused.
    #[arg(long, global = true)]
    tls: bool,
    /// Use TLS and accept only the certificate with this fingerprint
    /// (as the server prints it: sha256:...).
    #[arg(long, global = true, value_parser = parse_fingerprint)]
    fingerprint: Option<String>,
    /// Use TLS and trust certificates signed by this CA (a PEM file).
    #[arg(long, global = true, conflicts_with = "fingerprint")]
    ca: Option<PathBuf>,
    /// Read the server's token from the first line of this file.
    #[arg(long, global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Do not ask the server to keep files' modification times.
    #[arg(long, global = true)]
    no_mtime: bool,
    /// Always send big files from the start, even when the server kept part
    /// of them from an interrupted transfer.
    #[arg(long, global = true)]
    no_resume: bool,
    /// Follow symlinks and send what they point to.
    #[arg(short = 'L', long, global = true)]
    follow_links: bool,
    /// Folder to browse (given a file, its folder, with the cursor on it).
    #[arg(default_value = ".")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send files and folders, then exit: 0 only when the server confirmed
    /// every file stored with a matching BLAKE3 digest.
    ///
    /// A folder is sent whole and keeps its name as the top folder on the
    /// server (like `scp -r`). Symlinks are not followed unless
    /// --follow-links is given; they are listed as skipped.
    Send {
        /// Files and folders to send.
        #[arg(required_unless_present = "retry_failed")]
        paths: Vec<PathBuf>,
        /// Send nothing: ask the server what it would do with each file
        /// (new, identical, name clash, resume, refused and why).
        #[arg(long)]
        dry_run: bool,
        /// Send again the files the last transfer could not (they are
        /// remembered in $XDG_STATE_HOME/ferry/failed.json, else
        /// ~/.local/state/ferry/failed.json).
        #[arg(long, conflicts_with = "paths")]
        retry_failed: bool,
    },
}

/// `--on-clash` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClashArg {
    /// Keep both: store the new file as `name (1).ext`.
    Rename,
    /// Replace the existing file.
    Overwrite,
    /// Do nothing when an identical file is there; else keep both.
    SkipIdentical,
}

/// `--fingerprint` values, in the form the server prints them.
fn parse_fingerprint(text: &str) -> Result<String, String> {
    ferry_proto::duplex::normalize_fingerprint(text)
        .ok_or_else(|| format!("`{text}` is not a fingerprint (sha256: and 64 hex digits)"))
}

impl From<ClashArg> for OnClash {
    fn from(c: ClashArg) -> Self {
        match c {
            ClashArg::Rename => OnClash::Rename,
            ClashArg::Overwrite => OnClash::Overwrite,
            ClashArg::SkipIdentical => OnClash::SkipIdentical,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut options = Options::new(cli.to);
    options.limit_rate = cli.limit_rate;
    options.on_clash = cli.on_clash.into();
    options.keep_mtime = !cli.no_mtime;
    options.resume = !cli.no_resume;
    options.tls = match (cli.fingerprint, cli.ca, cli.tls) {
        (Some(fp), _, _) => Some(Trust::Fingerprint(fp)),
        (None, Some(ca), _) => Some(Trust::Ca(ca)),
        (None, None, true) => Some(Trust::FirstUse),
        (None, None, false) => None,
    };
    options.token = match (cli.token, cli.token_file) {
        (Some(token), _) => Some(token),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.lines().next().unwrap_or("").trim().to_string()),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "ferry: cannot read the token file {}: {e}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
    match cli.command {
        Some(Command::Send {
            paths,
            dry_run,
            retry_failed,
        }) => {
            let request = ferry_client::headless::Request {
                paths,
                follow_links: cli.follow_links,
                dry_run,
                retry_failed,
            };
            match ferry_client::headless::run(&request, &options) {
                Finish::Done => ExitCode::SUCCESS,
                Finish::Failed => ExitCode::FAILURE,
                // As a shell reports a command stopped by Ctrl-C.
                Finish::Interrupted => ExitCode::from(130),
            }
        }
        None => {
            let config = ferry_client::tui::Config {
                dir: cli.dir,
                options,
                follow_links: cli.follow_links,
            };
            match ferry_client::tui::run(config) {
                Ok(ending) => report_ending(&ending),
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "ferry: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Says, once the screen is back, what quitting left undone, and picks the
/// exit status: 128 plus the signal's number after a signal (as a shell
/// reports it), 130 (Ctrl-C's) when quitting cancelled a transfer.
fn report_ending(ending: &ferry_client::tui::Ending) -> ExitCode {
    // The terminal may be gone (it was closed): saying so must not fail.
    let say = |line: String| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    for trusted in &ending.trusted {
        say(format!("ferry: {}", trusted.describe()));
    }
    match (ending.cancelled, ending.unsent) {
        (true, Some(0)) | (false, _) => {}
        (true, Some(n)) => say(format!(
            "ferry: the transfer was cancelled: {} not sent \
             (ferry send --retry-failed sends them)",
            plural(n, "file")
        )),
        (true, None) => say(
            "ferry: the transfer was cancelled before it could say what it sent; \
             ferry send --retry-failed sends what it recorded"
                .into(),
        ),
    }
    match ending.signal {
        Some(signal) => {
            say(format!("ferry: stopped by signal {signal}"));
            ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(0)))
        }
        None if ending.cancelled && ending.unsent != Some(0) => ExitCode::from(130),
        None => ExitCode::SUCCESS,
    }
}
