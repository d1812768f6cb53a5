//! `ferry-server`: flags, logging and signals around [`ferry_server::Server`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferry_server::{Config, Limits, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

/// Receive files over TCP into a folder.
///
/// Speaks Ferry's protocol (used by `ferry` and `ferry send`) and the
/// tutorial's length-prefixed JSON header upload, on the same port.
/// Prints `listening on HOST:PORT` on stdout once bound; logs go to stderr
/// (set RUST_LOG=debug for more).
#[derive(Debug, Parser)]
#[command(name = "ferry-server", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Folder to store uploads in; created if missing.
    #[arg(long, default_value = "./uploads")]
    dir: PathBuf,
    /// Refuse files larger than this (e.g. 500M, 20G).
    #[arg(long, value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// Most connections served at once.
    #[arg(long, default_value_t = 128)]
    max_connections: usize,
    /// Most connections one address may hold at once (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_per_address: usize,
    /// Slowest a file may arrive, on average over each --body-timeout
    /// stretch (e.g. 512, 10K; 0 for no limit): trickling peers are dropped,
    /// and so are those taking the server's answers slower than this.
    #[arg(long, value_parser = parse_size, default_value = "512")]
    min_rate: u64,
    /// Most files one connection may send (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_files_per_connection: u64,
    /// Refuse names Windows cannot store (CON, NUL, COM1, a trailing dot or
    /// space, <>"|?*), so the folder can be copied anywhere.
    #[arg(long)]
    portable_names: bool,
    /// Most bytes all files in --dir together may take (e.g. 100G). What
    /// is there is counted at start: room freed by deleting files by hand
    /// while the server runs comes back only after a restart.
    #[arg(long, value_parser = parse_size)]
    quota: Option<u64>,
    /// Free space uploads must leave on the disk (e.g. 5G).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    min_free: u64,
    /// Seconds a connection may stay silent between files.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds a client may take to send one header once it has started.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a client may stay silent in the middle of a file.
    #[arg(long, default_value_t = 30)]
    body_timeout: u64,
    /// Seconds running uploads get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Permission bits of stored files, in octal. Senders' bits are never
    /// used; set-id and sticky bits are never given.
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    file_mode: u32,
    /// How long the partial of an interrupted upload is kept for its sender
    /// to resume: hours, or a number with s, m, h or d (e.g. 30m, 7d).
    #[arg(long, default_value = "24", value_parser = parse_ttl)]
    partial_ttl: Duration,
    /// Require this token from every client (prefer --token-file or the
    /// FERRY_TOKEN variable: a command line is visible to other users).
    #[arg(
        long,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Read the required token from the first line of this file.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// With a token set, still take tutorial-style uploads (they cannot
    /// carry one).
    #[arg(long)]
    allow_legacy: bool,
    /// Also take TLS connections (same port; plain ones stay for this
    /// machine and tutorial clients). A self-signed certificate is made on
    /// first start; its fingerprint is printed for clients to pin.
    #[arg(long)]
    tls: bool,
    /// Where the TLS certificate and key are kept (cert.pem, key.pem; your
    /// own may be put there). Default: $XDG_STATE_HOME/ferry-server/tls,
    /// else ~/.local/state/ferry-server/tls.
    #[arg(long, requires = "tls")]
    tls_dir: Option<PathBuf>,
    /// Listen on a non-loopback address without a token. Anyone who can
    /// reach the port can then write into --dir.
    #[arg(long)]
    insecure_no_auth: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(ferry_server::log::Stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // Its report of a line it could not write is an `eprintln!`, which
        // panics where stderr cannot be written: on a full disk, the
        // signal thread (and with it Ctrl-C) or the accept loop would die.
        .log_internal_errors(false)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(read_token(path)?),
        (None, None) => None,
    };
    check_exposure(
        &args.listen,
        token.is_some(),
        args.tls,
        args.insecure_no_auth,
    )?;
    let (max_connections, open_files) =
        share_open_files(raise_open_file_limit(), args.max_connections.max(1));
    let config = Config {
        listen: args.listen.clone(),
        dir: args.dir.clone(),
        max_file_size: args.max_file_size,
        limits: Limits {
            max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            header_timeout: Duration::from_secs(args.header_timeout.max(1)),
            open_files,
            max_per_address: args.max_per_address,
            min_rate: args.min_rate,
            max_files_per_connection: args.max_files_per_connection,
            body_timeout: Duration::from_secs(args.body_timeout.max(1)),
        },
        grace: Duration::from_secs(args.grace),
        file_mode: args.file_mode,
        partial_ttl: args.partial_ttl,
        token,
        allow_legacy: args.allow_legacy,
        min_free: args.min_free,
        portable_names: args.portable_names,
        quota: args.quota,
        tls_dir: match (args.tls, args.tls_dir.clone()) {
            (false, _) => None,
            (true, Some(dir)) => Some(dir),
            (true, None) => Some(default_tls_dir()?),
        },
    };
    let server = Server::bind(config)
        .with_context(|| format!("cannot serve {} on {}", args.dir.display(), args.listen))?;
    let addr = server.local_addr()?;

    let handle = server.shutdown_handle();
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if handle.is_requested() {
                warn!(
                    "second signal: exiting now (incomplete uploads are removed at next start; \
                     resumable partials are kept)"
                );
                std::process::exit(130);
            }
            info!("signal {signal}: finishing running uploads, then stopping");
            handle.request();
        }
    });

    info!("storing uploads in {}", args.dir.display());
    warn_if_syncfs_is_blind();
    let mut out = std::io::stdout().lock();
    let mut banner = format!("listening on {addr}\n");
    if let Some(fingerprint) = server.tls_fingerprint() {
        banner.push_str(&format!("tls fingerprint {fingerprint}\n"));
        info!("TLS certificate fingerprint: {fingerprint} (clients pin it on first use)");
    }
    // Whoever started us may stop reading stdout after the first line:
    // that is no reason to stop serving.
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
    drop(out);
    server.run()?;
    Ok(())
}

/// `$XDG_STATE_HOME/ferry-server/tls`, else `~/.local/state/ferry-server/tls`.
fn default_tls_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| anyhow::anyhow!("no HOME to keep the TLS certificate in; give --tls-dir"))?;
    Ok(base.join("ferry-server").join("tls"))
}

/// The first line of a token file, which must not be empty.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}

/// Refuses to listen beyond this machine without a token, unless told to.
fn check_exposure(listen: &str, has_token: bool, tls: bool, insecure: bool) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let exposed = listen
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| !a.ip().is_loopback()))
        .unwrap_or(false);
    match (exposed, has_token, insecure) {
        (false, _, _) => Ok(()),
        (true, true, _) if tls => Ok(()),
        (true, true, false) => anyhow::bail!(
            "refusing to listen on {listen} with a token but without --tls: the token would \
             cross the network in the clear. Add --tls, or --insecure-no-auth if you must"
        ),
        (true, true, true) => {
            warn!("LISTENING ON {listen} WITHOUT TLS: the token crosses the network in the clear");
            Ok(())
        }
        (true, false, true) => {
            warn!(
                "LISTENING ON {listen} WITHOUT A TOKEN: anyone who can reach this port can write \
                 into the upload folder"
            );
            Ok(())
        }
        (true, false, false) => anyhow::bail!(
            "refusing to listen on {listen} without a token: anyone who could reach it could \
             write into the upload folder. Give --token-file (or FERRY_TOKEN), or \
             --insecure-no-auth if that is really what you want"
        ),
    }
}

/// Descriptors a connection holds besides its uploads: its socket three
/// times over (session, reader, writer) and once more in the registry, the
/// committer's sync handle, the cached folder, one more while walking to a
/// folder, and a resumed file's second handle for its check.
const FILES_PER_CONNECTION: u64 = 8;
/// Uploads each connection should be able to keep open at once, at least.
const UPLOADS_PER_CONNECTION: u64 = 8;
/// Descriptors kept for the listener, the log, the staging folder and the
/// like (about ten), and for the parents of new folders waiting for a sync
/// (at most `NewFolders::MAX_WAITING`, 32). Every descriptor kept here is
/// one less for connections: with a limit of 128, these 64 leave room for
/// four.
const FILES_KEPT: u64 = 64;

/// Shares the open-file limit out: what the connections themselves hold,
/// and what their uploads may keep open (the rest). When the limit cannot
/// give `max_connections` connections their share, fewer are served at
/// once, with a warning, rather than failing uploads with "too many open
/// files". Returns (connections, files for uploads).
fn share_open_files(limit: u64, max_connections: usize) -> (usize, u64) {
    let room = limit.saturating_sub(FILES_KEPT);
    let fit = room / (FILES_PER_CONNECTION + UPLOADS_PER_CONNECTION);
    let connections = match usize::try_from(fit) {
        Ok(fit) if fit < max_connections => {
            let fit = fit.max(1);
            warn!(
                "the open-file limit ({limit}) is enough for {fit} connection(s) at once, \
                 not --max-connections {max_connections}: serving {fit} (raise it with ulimit -n)"
            );
            fit
        }
        _ => max_connections,
    };
    let held = connections as u64 * FILES_PER_CONNECTION;
    (connections, room.saturating_sub(held).max(1))
}

/// Raises the soft limit on open files to the hard one (the default soft
/// limit, often 1024, is far below what many sessions committing groups of
/// small files can use) and returns it.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("cannot raise the open-file limit: {e}");
        }
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    presize_fd_table(current);
    current
}

/// How many descriptors the process's table holds from the start.
const FD_TABLE: u64 = 8192;

/// Grows the table of file descriptors to [`FD_TABLE`] entries now, while
/// the process has a single thread. The kernel grows it by doubling as
/// files are opened, and once there are threads every growth waits for an
/// RCU grace period: perf showed a session stopped five times for 4-12 ms
/// each while its first few hundred small files filled the commit queue,
/// about a fifth of sending 10,000 of them. The table (8 bytes an entry)
/// never shrinks, so this is paid once.
fn presize_fd_table(limit: u64) {
    let highest = FD_TABLE.min(limit).saturating_sub(1);
    let Ok(highest) = i32::try_from(highest) else {
        return;
    };
    if highest < 3 {
        return;
    }
    // Duplicating any open file to the highest slot is what grows the
    // table; the copy is closed at once.
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    if let Err(e) = rustix::io::fcntl_dupfd_cloexec(&null, highest) {
        warn!("cannot reserve room for {FD_TABLE} open files: {e}");
    }
}

/// Small files are made durable by one `syncfs` per group, and before
/// Linux 5.8 `syncfs` did not report write-back errors: a disk failing
/// under a group would go unnoticed and its files acked. Said once at
/// start, where whoever runs the server looks.
fn warn_if_syncfs_is_blind() {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return;
    };
    if let Some(version) = kernel_version(&release)
        && version < (5, 8)
    {
        warn!(
            "this kernel ({}) does not report disk write errors to syncfs: a failing \
             disk may go unnoticed for small files (Linux 5.8 and later report them)",
            release.trim()
        );
    }
}

/// `5.4.0-150-generic` as (5, 4).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Parses an octal permission mode such as `644` or `0640`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim(), 8)
        .map_err(|_| format!("`{text}` is not an octal mode (try 644)"))?;
    if mode > 0o777 {
        return Err(format!(
            "`{text}`: only permission bits (up to 777) may be given"
        ));
    }
    Ok(mode)
}

/// `500M` as (500, "M"): the leading digits and what follows them, after
/// trimming. `None` when there are no digits or too many.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    Some((digits.parse().ok()?, unit))
}

/// Parses `1024`, `500K`, `20M`, `2G`, `1T` (binary units) into bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let (n, unit) =
        number_and_unit(text).ok_or_else(|| format!("`{text}` is not a size (try 500M or 20G)"))?;
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("`{text}` is not a size (try 500M or 20G)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `24` (hours, as the flag always took), `90s`, `30m`, `2h` or `7d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a time (try 24, 30m or 7d)"))?;
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "" | "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` is not a time (try 24, 30m or 7d)")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::{UPLOADS_PER_CONNECTION, parse_size, parse_ttl, share_open_files};
    use std::time::Duration;

    #[test]
    fn open_files_are_shared_between_connections_and_uploads() {
        // Plenty: every connection served, the rest for uploads.
        assert_eq!(share_open_files(20_000, 128), (128, 20_000 - 64 - 128 * 8));
        // A 1024 limit cannot hold 128 connections and their uploads.
        let (connections, uploads) = share_open_files(1024, 128);
        assert_eq!(connections, 60);
        assert_eq!(uploads, 1024 - 64 - 60 * 8);
        assert!(uploads >= connections as u64 * UPLOADS_PER_CONNECTION);
        // Hardly anything: one connection, still some room.
        assert_eq!(share_open_files(10, 128), (1, 1));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(super::kernel_version("5.4.0-150-generic\n"), Some((5, 4)));
        assert_eq!(super::kernel_version("6.12.48+deb13-amd64"), Some((6, 12)));
        assert_eq!(super::kernel_version("garbage"), None);
        assert!(super::kernel_version("5.4.0").is_some_and(|v| v < (5, 8)));
    }

    #[test]
    fn times_to_live() {
        assert_eq!(parse_ttl("24"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("-1").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("500K"), Ok(500 << 10));
        assert_eq!(parse_size("20m"), Ok(20 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn modes() {
        use super::parse_mode;
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0750"), Ok(0o750));
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("9").is_err());
    }
}
