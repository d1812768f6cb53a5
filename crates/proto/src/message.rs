//! The messages Ferry frames carry, as serde types.
//!
//! Every frame body is one JSON object. Ferry (v1) messages carry a `"type"`
//! tag; the tutorial-era upload header (`{"filename", "size"}`) has none,
//! which is how a server tells the two apart on the first frame of a
//! connection (see [`Opening`]). `docs/PROTOCOL.md` describes the exchange.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

mod fields;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The header a tutorial-style client sends before each file's raw bytes.
///
/// Such clients never read from the socket, so a server must never answer
/// them: a reply they do not read turns their close into a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyHeader {
    pub filename: String,
    pub size: u64,
}

/// What a v1 sender wants when the name is already taken on the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnClash {
    /// Keep the existing file and store the new one under a free name,
    /// such as `report (1).pdf`. Nothing is ever overwritten.
    #[default]
    Rename,
    /// Atomically replace the existing file.
    Overwrite,
    /// Keep the existing file untouched when its bytes are identical to the
    /// upload; otherwise behave like [`OnClash::Rename`].
    SkipIdentical,
}

/// Announces one file: its relative path (`/`-separated), exact size, and
/// clash policy. Exactly `size` raw bytes follow, then a [`ClientMsg::Done`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    pub id: u64,
    pub path: String,
    pub size: u64,
    #[serde(default)]
    pub on_clash: OnClash,
    /// Modification time the stored file should keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Mtime>,
    /// The sender's name for this exact file (its local identity and
    /// version), so that an interrupted upload can be resumed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_key: Option<String>,
    /// Where the body starts, as offered by the server in a plan (`resume`).
    /// The body is then the bytes from here to `size`; the `done` digest
    /// still covers the whole file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
}

/// A point in time as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One file a sender asks about before sending ([`ClientMsg::Plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub id: u64,
    pub path: String,
    pub size: u64,
    #[serde(default)]
    pub on_clash: OnClash,
    /// The file's BLAKE3, when the sender wants identical files recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_key: Option<String>,
}

/// What the server would do with one planned file, if it were sent now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// The name is free.
    New,
    /// The same bytes are already there under that name (`skip_identical`).
    Identical,
    /// The name is taken: `result` is what the clash policy will do, and
    /// `stored_as` the name the file would get.
    Clash { result: Clash, stored_as: String },
    /// Part of this file is already here from an interrupted upload: send
    /// from `offset` on. When the name is taken meanwhile, `clash` and
    /// `stored_as` (both or neither) say what the clash policy will do, as
    /// in [`Verdict::Clash`]; servers before them never sent either.
    Resume {
        offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clash: Option<Clash>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored_as: Option<String>,
    },
    /// It would be refused (a bad name, too large, no room left, ...).
    Refused { code: ErrorCode, message: String },
}

/// The verdict on one [`PlanEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVerdict {
    pub id: u64,
    pub verdict: Verdict,
}

/// Messages a v1 client sends.
// Read through `fields`, in one pass (see there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    try_from = "fields::ClientFields"
)]
pub enum ClientMsg {
    /// First message of a v1 connection. `token` is required by servers
    /// that are started with one.
    Hello {
        version: u32,
        client: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A file header; the body follows the frame.
    File(FileHeader),
    /// Ends the file `id`: the BLAKE3 digest (lowercase hex) of the body sent.
    Done { id: u64, blake3: String },
    /// Ends the file `id` without storing it, in place of `done`: the sender
    /// could not read the whole file (it shrank, or a disk failed) and padded
    /// the body out to the announced size to keep the stream in step.
    Abort { id: u64, reason: String },
    /// Creates a folder (and its parents), so empty folders survive a send.
    Mkdir { id: u64, path: String },
    /// Asks what would happen to these files; answered by one
    /// [`ServerMsg::Plan`]. Nothing is changed on the server.
    Plan { files: Vec<PlanEntry> },
}

/// What happened to a name that already existed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clash {
    /// The name was free.
    #[default]
    None,
    /// The name was taken; the file was stored under `stored_as` instead.
    Renamed,
    /// The previous file was replaced.
    Overwritten,
    /// An identical file was already there; nothing was written.
    Identical,
}

/// Machine-readable reasons a server refuses something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The path is not a plain relative path of plain components, or it
    /// would pass through something that is not a folder.
    BadName,
    /// The declared size is over the server's per-file limit.
    TooLarge,
    /// The server's disk cannot hold the file.
    NoSpace,
    /// The bytes received do not hash to the digest the sender announced.
    DigestMismatch,
    /// The sender aborted the file after its body.
    Aborted,
    /// A resumed upload did not add up (the partial was gone, short, or
    /// did not match): send the whole file again.
    ResumeMismatch,
    /// The file name exists and the clash policy refused to touch it.
    Exists,
    /// The server failed to store the file for a reason of its own.
    Io,
    /// A frame or message broke the protocol.
    Protocol,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The server is at its connection limit.
    Busy,
    /// The server is shutting down.
    ShuttingDown,
    /// The server requires a token and the client gave none, or a wrong one.
    Unauthorized,
    /// A limit of the server's was reached (files per connection, say).
    LimitReached,
    /// The client missed a deadline: silent too long, a header not
    /// finished in time, or a body arriving slower than the minimum rate.
    Timeout,
    /// A code from a newer peer; read `message`.
    #[serde(other)]
    Unknown,
}

/// The result of one file or folder request.
// Read through `fields`, in one pass (see there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "snake_case",
    try_from = "fields::OutcomeFields"
)]
pub enum Outcome {
    /// The file is durably stored under `stored_as` (relative, `/`-separated).
    Stored {
        stored_as: String,
        bytes: u64,
        blake3: String,
        #[serde(default)]
        clash: Clash,
    },
    /// The folder exists.
    Folder { path: String },
    /// Nothing was stored. After a failure found at header time (any code
    /// but `digest_mismatch` and `aborted`) the server closes the connection,
    /// because the body it announced cannot be told apart from the next frame.
    Failed { code: ErrorCode, message: String },
}

/// The server's answer to one [`ClientMsg::File`] or [`ClientMsg::Mkdir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: u64,
    pub outcome: Outcome,
}

/// Messages a server sends to v1 clients (never to legacy ones).
// Read through `fields`, in one pass (see there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    try_from = "fields::ServerFields"
)]
pub enum ServerMsg {
    /// Accepts a [`ClientMsg::Hello`].
    Welcome {
        version: u32,
        server: String,
        /// Largest file the server will take, if it has a limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_file_size: Option<u64>,
    },
    Ack(Ack),
    /// Answers a [`ClientMsg::Plan`], one verdict per file, in order.
    Plan {
        verdicts: Vec<PlanVerdict>,
    },
    /// A connection-level refusal; the server closes right after it.
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// The first frame of a connection, which decides how the rest is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A v1 client's hello.
    Hello {
        version: u32,
        client: String,
        token: Option<String>,
    },
    /// A tutorial-style client's first upload header.
    Legacy(LegacyHeader),
}

impl Opening {
    /// Whether a first frame is a v1 client's, even one [`Opening::parse`]
    /// refuses: a JSON object naming a `type`, which tutorial headers never
    /// do. Such a client reads what the server writes, so it can be told
    /// what was wrong; a tutorial client never reads.
    pub fn is_v1(body: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|value| value.get("type").is_some())
    }

    /// Parses the first frame of a connection.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        if !value.is_object() {
            return Err(ProtoError::Unexpected(
                "the first frame is not a JSON object".into(),
            ));
        }
        if value.get("type").is_some() {
            return match serde_json::from_value(value)? {
                ClientMsg::Hello {
                    version,
                    client,
                    token,
                } => Ok(Opening::Hello {
                    version,
                    client,
                    token,
                }),
                other => Err(ProtoError::Unexpected(format!(
                    "a connection must open with hello, not {}",
                    other.kind()
                ))),
            };
        }
        Ok(Opening::Legacy(LegacyHeader::parse(body)?))
    }
}

impl LegacyHeader {
    /// Parses a tutorial-style header.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        Ok(serde_json::from_slice(body)?)
    }
}

impl ClientMsg {
    /// Parses one v1 client frame.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The message's `type`, for error messages and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::File(_) => "file",
            ClientMsg::Done { .. } => "done",
            ClientMsg::Abort { .. } => "abort",
            ClientMsg::Mkdir { .. } => "mkdir",
            ClientMsg::Plan { .. } => "plan",
        }
    }
}

impl ServerMsg {
    /// Parses one server frame.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        Ok(serde_json::from_slice(body)?)
    }
}

/// Serialises a message into a frame body.
pub fn to_body<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain structs to a Vec cannot fail: no maps with
    // non-string keys, no failing `Serialize` impls.
    serde_json::to_vec(msg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_client(msg: ClientMsg) {
        let body = to_body(&msg);
        assert_eq!(ClientMsg::parse(&body).expect("parses"), msg);
    }

    fn round_trip_server(msg: ServerMsg) {
        let body = to_body(&msg);
        assert_eq!(ServerMsg::parse(&body).expect("parses"), msg);
    }

    #[test]
    fn client_messages_round_trip() {
        round_trip_client(ClientMsg::Hello {
            version: 1,
            client: "ferry/0.1".into(),
            token: None,
        });
        round_trip_client(ClientMsg::Hello {
            version: 1,
            client: "ferry/0.1".into(),
            token: Some("s3cret".into()),
        });
        round_trip_client(ClientMsg::File(FileHeader {
            id: 7,
            path: "photos/2026/ä b.jpg".into(),
            size: u64::MAX,
            on_clash: OnClash::SkipIdentical,
            mtime: Some(Mtime {
                secs: 1_700_000_000,
                nanos: 5,
            }),
            resume_key: Some("k".into()),
            offset: 42,
        }));
        round_trip_client(ClientMsg::Plan {
            files: vec![PlanEntry {
                id: 1,
                path: "a".into(),
                size: 3,
                on_clash: OnClash::Rename,
                blake3: None,
                resume_key: Some("k".into()),
            }],
        });
        round_trip_client(ClientMsg::Done {
            id: 7,
            blake3: "ab".repeat(32),
        });
        round_trip_client(ClientMsg::Abort {
            id: 7,
            reason: "shrank".into(),
        });
        round_trip_client(ClientMsg::Mkdir {
            id: 8,
            path: "empty".into(),
        });
    }

    #[test]
    fn server_messages_round_trip() {
        round_trip_server(ServerMsg::Welcome {
            version: 1,
            server: "ferry-server/0.1".into(),
            max_file_size: Some(10),
        });
        round_trip_server(ServerMsg::Welcome {
            version: 1,
            server: "s".into(),
            max_file_size: None,
        });
        for outcome in [
            Outcome::Stored {
                stored_as: "a (1).txt".into(),
                bytes: 3,
                blake3: "00".repeat(32),
                clash: Clash::Renamed,
            },
            Outcome::Folder { path: "x/y".into() },
            Outcome::Failed {
                code: ErrorCode::BadName,
                message: "no".into(),
            },
        ] {
            round_trip_server(ServerMsg::Ack(Ack { id: 1, outcome }));
        }
        round_trip_server(ServerMsg::Plan {
            verdicts: vec![
                PlanVerdict {
                    id: 0,
                    verdict: Verdict::New,
                },
                PlanVerdict {
                    id: 1,
                    verdict: Verdict::Clash {
                        result: Clash::Renamed,
                        stored_as: "a (1)".into(),
                    },
                },
                PlanVerdict {
                    id: 2,
                    verdict: Verdict::Resume {
                        offset: 9,
                        clash: None,
                        stored_as: None,
                    },
                },
                PlanVerdict {
                    id: 4,
                    verdict: Verdict::Resume {
                        offset: 9,
                        clash: Some(Clash::Renamed),
                        stored_as: Some("a (2)".into()),
                    },
                },
                PlanVerdict {
                    id: 3,
                    verdict: Verdict::Refused {
                        code: ErrorCode::NoSpace,
                        message: "full".into(),
                    },
                },
            ],
        });
        round_trip_server(ServerMsg::Error {
            code: ErrorCode::Busy,
            message: "full".into(),
        });
    }

    #[test]
    fn wire_shape_is_stable() {
        let body = to_body(&ClientMsg::File(FileHeader {
            id: 1,
            path: "a.txt".into(),
            size: 5,
            on_clash: OnClash::Rename,
            mtime: None,
            resume_key: None,
            offset: 0,
        }));
        assert_eq!(
            std::str::from_utf8(&body).expect("utf8"),
            r#"{"type":"file","id":1,"path":"a.txt","size":5,"on_clash":"rename"}"#
        );
    }

    #[test]
    fn on_clash_defaults_to_rename() {
        let msg = ClientMsg::parse(br#"{"type":"file","id":1,"path":"a","size":0}"#).expect("ok");
        assert!(matches!(
            msg,
            ClientMsg::File(FileHeader {
                on_clash: OnClash::Rename,
                ..
            })
        ));
    }

    #[test]
    fn unknown_error_codes_from_newer_servers_still_parse() {
        let msg =
            ServerMsg::parse(br#"{"type":"error","code":"quota_exceeded","message":"later"}"#)
                .expect("ok");
        assert!(matches!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    /// A resume verdict from a server that does not say whether the name
    /// is taken still reads, as "not taken".
    #[test]
    fn a_resume_verdict_without_its_clash_reads() {
        let msg = ServerMsg::parse(
            br#"{"type":"plan","verdicts":[{"id":1,"verdict":{"kind":"resume","offset":4}}]}"#,
        )
        .expect("parses");
        let ServerMsg::Plan { verdicts } = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(
            verdicts[0].verdict,
            Verdict::Resume {
                offset: 4,
                clash: None,
                stored_as: None
            }
        );
    }

    #[test]
    fn opening_tells_tutorial_headers_from_hello() {
        // Exactly what json.dumps({'size': ..., 'filename': ...}) writes.
        let legacy = Opening::parse(br#"{"size": 12, "filename": "movie.mp4"}"#).expect("ok");
        assert_eq!(
            legacy,
            Opening::Legacy(LegacyHeader {
                filename: "movie.mp4".into(),
                size: 12
            })
        );
        let hello = Opening::parse(br#"{"type":"hello","version":1,"client":"c"}"#).expect("ok");
        assert!(matches!(hello, Opening::Hello { version: 1, .. }));
    }

    #[test]
    fn opening_refuses_bad_first_frames() {
        for body in [
            &br#"{"size": -1, "filename": "x"}"#[..],
            br#"{"size": 1.5, "filename": "x"}"#,
            br#"{"size": "12", "filename": "x"}"#,
            br#"{"filename": "x"}"#,
            br#"{"size": 3}"#,
            br#"[1,2]"#,
            br#"not json"#,
            br#"{"type":"file","id":1,"path":"a","size":0}"#,
            br#"{"type":"teleport"}"#,
            b"\xff\xfe",
        ] {
            assert!(
                Opening::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_first_frame_naming_a_type_is_a_v1_clients() {
        for body in [
            &br#"{"type":"hello","client":"c"}"#[..],
            br#"{"type":"file","id":1,"path":"a","size":0}"#,
            br#"{"type":"teleport"}"#,
        ] {
            assert!(Opening::is_v1(body), "{}", String::from_utf8_lossy(body));
        }
        for body in [
            &br#"{"size": 12, "filename": "movie.mp4"}"#[..],
            br#"{"size": -1}"#,
            br#"[{"type":"hello"}]"#,
            br#"not json"#,
        ] {
            assert!(!Opening::is_v1(body), "{}", String::from_utf8_lossy(body));
        }
    }
}
