//! Saying hello to a server, and the frame helpers every exchange uses.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use ferry_proto::{
    ClientMsg, ErrorCode, PROTOCOL_VERSION, ServerMsg, read_frame, to_body, write_frame,
};

use super::link::{Link, LinkWriter, Trust};
use super::sender::Options;

pub(crate) fn send_frame(out: &mut impl Write, msg: &ClientMsg) -> io::Result<()> {
    write_frame(out, &to_body(msg)).map_err(|e| match e {
        ferry_proto::FrameError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    })
}

/// How every handshake error that the server answered (rather than a
/// network failure) begins.
const REFUSED: &str = "the server refused";

/// How a handshake error begins when something at the address answered,
/// but not in Ferry's protocol: an SSH or web server on that port, say.
const NOT_FERRY: &str = "not a Ferry server";

/// How long a server has to answer the hello: more than its longest pause
/// after wrong tokens (8 s), far less than the silence a transfer allows.
/// A web server, waiting for a request line that never comes, says nothing.
const WELCOME_WAIT: Duration = Duration::from_secs(15);

/// Whether a handshake error means the server answered and said no (or
/// was not a Ferry server), as opposed to not being reached at all.
pub fn is_refusal(error: &str) -> bool {
    error.starts_with(REFUSED) || error.starts_with(NOT_FERRY)
}

/// What a [`probe`] would have said, given the error of a plan or a
/// transfer that could not get past [`connect`]: the server was not reached
/// ("cannot reach ADDR: ...") or the handshake failed ("handshake with ADDR
/// failed: WHY", the probe's WHY). `None` for any other error, which means
/// the server was there.
pub fn connect_failure(error: &str) -> Option<String> {
    if error.starts_with("cannot reach ") {
        return Some(error.to_string());
    }
    let (_, why) = error
        .strip_prefix("handshake with ")?
        .split_once(" failed: ")?;
    Some(why.to_string())
}

/// Why a handshake failed when the server let the connection in and then
/// closed it unanswered: what a server at one of its connection limits does.
pub(crate) const BUSY: &str =
    "the server closed the connection without answering (busy, or not a Ferry server?)";

/// How often a connection is tried again when a busy server does not let it
/// in, and how long the first pause between tries is (it grows by as much
/// each time: 0.75 s in all).
const BUSY_TRIES: u32 = 3;
const BUSY_PAUSE: Duration = Duration::from_millis(125);

/// A connection to `options.addr` past the handshake, with the server's
/// name and file size limit.
///
/// A server at a connection limit may not yet have given back the place of
/// a connection that just closed (this client's previous one, or anyone
/// else's), and closes a newcomer unanswered: that is tried again a few
/// times over a moment. Nothing else is: not a refused token, which would
/// only lengthen the server's delay for this address.
pub(crate) fn connect(options: &Options) -> Result<(Link, String, Option<u64>), String> {
    let mut tries = 0;
    loop {
        let attempt = Link::open(&options.addr, options.connect_timeout, options.tls.as_ref())
            .and_then(|mut link| {
                let (server, max_file_size) = handshake(&mut link, options.token.as_deref())
                    .map_err(|e| format!("handshake with {} failed: {e}", options.addr))?;
                Ok((link, server, max_file_size))
            });
        match attempt {
            Err(why) if why.contains(BUSY) && tries < BUSY_TRIES => {
                tries += 1;
                std::thread::sleep(BUSY_PAUSE * tries);
            }
            done => return done,
        }
    }
}

/// Says hello and returns the server's name and file size limit.
pub(crate) fn handshake(
    link: &mut Link,
    token: Option<&str>,
) -> Result<(String, Option<u64>), String> {
    let plain = matches!(link.writer, LinkWriter::Plain(_));
    let far = link
        .socket
        .peer_addr()
        .map_or(true, |a| !a.ip().is_loopback());
    if token.is_some() && plain && far {
        return Err("refusing to send the token unencrypted to another machine: add --tls".into());
    }
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: format!("ferry/{}", env!("CARGO_PKG_VERSION")),
        token: token.map(str::to_string),
    };
    // A server at its connection limit closes a newcomer without reading
    // it, which reaches us as a reset, at the send or at the read; over
    // TLS, as an unexpected end (no close_notify: it never took the
    // connection).
    let dropped = |e: &io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ) {
            BUSY.to_string()
        } else {
            describe_io(e)
        }
    };
    send_frame(&mut link.writer, &hello)
        .and_then(|()| link.writer.flush())
        .map_err(|e| dropped(&e))?;
    // Whatever the connection's own timeout: a shorter one would take a
    // server's pause after a wrong token for silence.
    let wait = link.socket.read_timeout().ok().flatten();
    let _ = link.socket.set_read_timeout(Some(WELCOME_WAIT));
    // Bytes that are no Ferry message, or none at all for WELCOME_WAIT,
    // mean something else is listening there.
    let silent = |e: &io::Error| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "no answer to the hello in {} s (is it a Ferry server?)",
            WELCOME_WAIT.as_secs()
        ),
        _ => dropped(e),
    };
    let welcome = read_message(&mut link.reader, silent, |_| {
        format!("{NOT_FERRY}: it speaks another protocol")
    });
    let _ = link.socket.set_read_timeout(wait);
    match welcome? {
        Some(ServerMsg::Welcome {
            version,
            server,
            max_file_size,
        }) if version == PROTOCOL_VERSION => {
            link.remember_server();
            Ok((server, max_file_size))
        }
        Some(ServerMsg::Welcome { version, .. }) => Err(format!(
            "the server answered with protocol version {version}"
        )),
        // Said plainly, with the way out: the picker's header has room for
        // little more.
        Some(ServerMsg::Error {
            code: ErrorCode::Unauthorized,
            ..
        }) if token.is_none() => Err(format!(
            "{REFUSED}: it needs a token (--token-file or FERRY_TOKEN)"
        )),
        Some(ServerMsg::Error {
            code: ErrorCode::Unauthorized,
            ..
        }) => Err(format!("{REFUSED} the token given")),
        Some(ServerMsg::Error { message, .. }) => Err(format!("{REFUSED}: {message}")),
        Some(ServerMsg::Ack(_) | ServerMsg::Plan { .. }) => {
            Err("the server answered out of turn".into())
        }
        None => Err(BUSY.into()),
    }
}

pub(crate) fn read_server_msg(r: &mut impl Read) -> Result<Option<ServerMsg>, String> {
    read_message(r, describe_io, |why| why)
}

/// Reads one message: `on_io` puts a failed read into words, and
/// `on_garbage` what was read when it is no Ferry message.
fn read_message(
    r: &mut impl Read,
    on_io: impl Fn(&io::Error) -> String,
    on_garbage: impl Fn(String) -> String,
) -> Result<Option<ServerMsg>, String> {
    let body = match read_frame(r) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(ferry_proto::FrameError::Io(e)) => return Err(on_io(&e)),
        Err(e) => return Err(on_garbage(format!("the server sent a broken frame: {e}"))),
    };
    ServerMsg::parse(&body)
        .map(Some)
        .map_err(|e| on_garbage(format!("the server sent something unexpected: {e}")))
}

/// Turns an I/O error into plain words for a person.
pub fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused (is ferry-server running there?)".into(),
        ConnectionReset | ConnectionAborted | BrokenPipe => {
            "the server dropped the connection".into()
        }
        TimedOut | WouldBlock => "the server stopped answering (timed out)".into(),
        _ => super::link::describe_tls(e),
    }
}

/// Connects and completes the handshake only (with the token and TLS a
/// transfer would use), to tell whether a server is there and willing;
/// returns its name. The UI uses it for its status line.
pub fn probe(
    addr: &str,
    timeout: Duration,
    token: Option<&str>,
    tls: Option<&Trust>,
) -> Result<String, String> {
    // The handshake gives the welcome its own wait.
    let mut link = Link::open(addr, timeout, tls)?;
    let (server, _) = handshake(&mut link, token)?;
    let _ = link.socket.shutdown(Shutdown::Both);
    Ok(server)
}
