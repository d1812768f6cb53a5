//! Reading the tagged messages in one pass.
//!
//! serde's derive for an internally tagged enum (`#[serde(tag = "type")]`)
//! cannot know which variant it is reading until it has seen the tag, which
//! may come last, so it first copies the whole object into a tree of owned
//! values and then decodes the variant from that copy: every string is
//! allocated twice, and an ack (whose outcome is tagged too) is copied
//! twice over. File headers, their trailers and acks are nearly every frame
//! of a transfer, and for 4 KiB files those copies were a quarter of the
//! server's instructions per file and most of the client's ack reading.
//!
//! So each of these messages is read once into a struct that has every
//! field any of its variants has, and then checked into the variant its tag
//! names. Writing still uses the derives, and what is accepted is the same
//! but for three things, all refusals of what no Ferry peer sends: a field
//! that belongs to another variant must still have its own type (an ack's
//! `bytes` cannot be a string even on a `failed` outcome), a message must
//! be an object (the derive also takes `["done", 3, "ab..."]`), and a file
//! header's `offset` cannot be past its `size` (there is no body it could
//! mean). The tests at the bottom hold both readings side by side.

use serde::Deserialize;

use super::{Ack, Clash, ClientMsg, ErrorCode, FileHeader, Mtime, OnClash, Outcome, PlanEntry};
use super::{PlanVerdict, ServerMsg};

/// A field the tag's variant needs, or serde's own wording for its absence.
fn need<T>(value: Option<T>, field: &'static str) -> Result<T, String> {
    value.ok_or_else(|| format!("missing field `{field}`"))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClientKind {
    Hello,
    File,
    Done,
    Abort,
    Mkdir,
    Plan,
}

/// Every field of every [`ClientMsg`].
#[derive(Deserialize)]
pub(super) struct ClientFields {
    #[serde(rename = "type")]
    kind: ClientKind,
    version: Option<u32>,
    client: Option<String>,
    token: Option<String>,
    id: Option<u64>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    on_clash: OnClash,
    mtime: Option<Mtime>,
    resume_key: Option<String>,
    #[serde(default)]
    offset: u64,
    blake3: Option<String>,
    reason: Option<String>,
    files: Option<Vec<PlanEntry>>,
}

impl TryFrom<ClientFields> for ClientMsg {
    type Error = String;

    fn try_from(f: ClientFields) -> Result<Self, String> {
        Ok(match f.kind {
            ClientKind::Hello => ClientMsg::Hello {
                version: need(f.version, "version")?,
                client: need(f.client, "client")?,
                token: f.token,
            },
            ClientKind::File => ClientMsg::File(FileHeader {
                id: need(f.id, "id")?,
                path: need(f.path, "path")?,
                size: match (f.size, f.offset) {
                    (Some(size), offset) if offset > size => {
                        return Err(format!(
                            "`offset` {offset} is past the end of the file (`size` {size})"
                        ));
                    }
                    (size, _) => need(size, "size")?,
                },
                on_clash: f.on_clash,
                mtime: f.mtime,
                resume_key: f.resume_key,
                offset: f.offset,
            }),
            ClientKind::Done => ClientMsg::Done {
                id: need(f.id, "id")?,
                blake3: need(f.blake3, "blake3")?,
            },
            ClientKind::Abort => ClientMsg::Abort {
                id: need(f.id, "id")?,
                reason: need(f.reason, "reason")?,
            },
            ClientKind::Mkdir => ClientMsg::Mkdir {
                id: need(f.id, "id")?,
                path: need(f.path, "path")?,
            },
            ClientKind::Plan => ClientMsg::Plan {
                files: need(f.files, "files")?,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ServerKind {
    Welcome,
    Ack,
    Plan,
    Error,
}

/// Every field of every [`ServerMsg`].
#[derive(Deserialize)]
pub(super) struct ServerFields {
    #[serde(rename = "type")]
    kind: ServerKind,
    version: Option<u32>,
    server: Option<String>,
    max_file_size: Option<u64>,
    id: Option<u64>,
    outcome: Option<Outcome>,
    verdicts: Option<Vec<PlanVerdict>>,
    code: Option<ErrorCode>,
    message: Option<String>,
}

impl TryFrom<ServerFields> for ServerMsg {
    type Error = String;

    fn try_from(f: ServerFields) -> Result<Self, String> {
        Ok(match f.kind {
            ServerKind::Welcome => ServerMsg::Welcome {
                version: need(f.version, "version")?,
                server: need(f.server, "server")?,
                max_file_size: f.max_file_size,
            },
            ServerKind::Ack => ServerMsg::Ack(Ack {
                id: need(f.id, "id")?,
                outcome: need(f.outcome, "outcome")?,
            }),
            ServerKind::Plan => ServerMsg::Plan {
                verdicts: need(f.verdicts, "verdicts")?,
            },
            ServerKind::Error => ServerMsg::Error {
                code: need(f.code, "code")?,
                message: need(f.message, "message")?,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OutcomeKind {
    Stored,
    Folder,
    Failed,
}

/// Every field of every [`Outcome`].
#[derive(Deserialize)]
pub(super) struct OutcomeFields {
    status: OutcomeKind,
    stored_as: Option<String>,
    bytes: Option<u64>,
    blake3: Option<String>,
    #[serde(default)]
    clash: Clash,
    path: Option<String>,
    code: Option<ErrorCode>,
    message: Option<String>,
}

impl TryFrom<OutcomeFields> for Outcome {
    type Error = String;

    fn try_from(f: OutcomeFields) -> Result<Self, String> {
        Ok(match f.status {
            OutcomeKind::Stored => Outcome::Stored {
                stored_as: need(f.stored_as, "stored_as")?,
                bytes: need(f.bytes, "bytes")?,
                blake3: need(f.blake3, "blake3")?,
                clash: f.clash,
            },
            OutcomeKind::Folder => Outcome::Folder {
                path: need(f.path, "path")?,
            },
            OutcomeKind::Failed => Outcome::Failed {
                code: need(f.code, "code")?,
                message: need(f.message, "message")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    //! The one-pass readers against serde's own derive for the same enums,
    //! kept here as the reference: they must agree on what is a message
    //! and on what it says.

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::super::{ErrorCode, FileHeader, PlanEntry, PlanVerdict};
    use super::{Clash, ClientMsg, ServerMsg};

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum ReferenceClient {
        Hello {
            version: u32,
            client: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            token: Option<String>,
        },
        File(FileHeader),
        Done {
            id: u64,
            blake3: String,
        },
        Abort {
            id: u64,
            reason: String,
        },
        Mkdir {
            id: u64,
            path: String,
        },
        Plan {
            files: Vec<PlanEntry>,
        },
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "status", rename_all = "snake_case")]
    enum ReferenceOutcome {
        Stored {
            stored_as: String,
            bytes: u64,
            blake3: String,
            #[serde(default)]
            clash: Clash,
        },
        Folder {
            path: String,
        },
        Failed {
            code: ErrorCode,
            message: String,
        },
    }

    #[derive(Serialize, Deserialize)]
    struct ReferenceAck {
        id: u64,
        outcome: ReferenceOutcome,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum ReferenceServer {
        Welcome {
            version: u32,
            server: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            max_file_size: Option<u64>,
        },
        Ack(ReferenceAck),
        Plan {
            verdicts: Vec<PlanVerdict>,
        },
        Error {
            code: ErrorCode,
            message: String,
        },
    }

    /// `json` read as `T`, written back out as JSON so that two readings
    /// can be compared whatever types they were read into (`None`: refused).
    fn read_as<T: DeserializeOwned + Serialize>(json: &str) -> Option<Value> {
        serde_json::from_str::<T>(json)
            .ok()
            .map(|m| serde_json::to_value(m).expect("writes"))
    }

    fn client_both(json: &str) -> (Option<Value>, Option<Value>) {
        (read_as::<ClientMsg>(json), read_as::<ReferenceClient>(json))
    }

    fn server_both(json: &str) -> (Option<Value>, Option<Value>) {
        (read_as::<ServerMsg>(json), read_as::<ReferenceServer>(json))
    }

    const CLIENT_FRAMES: &[&str] = &[
        r#"{"type":"hello","version":1,"client":"ferry 0.1"}"#,
        r#"{"client":"x","version":1,"type":"hello","token":"t"}"#,
        r#"{"type":"hello","version":1,"client":"x","token":null}"#,
        r#"{"type":"file","id":3,"path":"a/b.txt","size":4096}"#,
        r#"{"id":3,"path":"a/b.txt","size":4096,"type":"file","on_clash":"overwrite"}"#,
        r#"{"type":"file","id":3,"path":"a","size":1,"mtime":{"secs":-5,"nanos":7},"resume_key":"k","offset":1}"#,
        r#"{"type":"file","id":3,"path":"a","size":1,"mtime":null,"resume_key":null}"#,
        r#"{"type":"file","id":3,"path":"a","size":1,"extra":[1,{"x":null}]}"#,
        r#"{"type":"file","id":3,"path":"a\u0000b","size":1}"#,
        r#"{"type":"done","id":3,"blake3":"ab"}"#,
        r#"{"blake3":"ab","type":"done","id":3}"#,
        r#"{"type":"abort","id":3,"reason":"shrank"}"#,
        r#"{"type":"mkdir","id":1,"path":"empty"}"#,
        r#"{"type":"plan","files":[{"id":0,"path":"a","size":1}]}"#,
        r#"{"type":"plan","files":[]}"#,
        // Refused by both.
        r#"{"type":"file","id":3,"path":"a"}"#,
        r#"{"type":"file","id":-1,"path":"a","size":1}"#,
        r#"{"type":"file","id":3,"path":"a","size":-1}"#,
        r#"{"type":"file","id":3,"path":"a","size":1.5}"#,
        r#"{"type":"file","id":3,"path":7,"size":1}"#,
        r#"{"type":"file","id":3,"path":"a","size":1,"on_clash":"explode"}"#,
        r#"{"type":"file","id":3,"path":"a","size":1,"on_clash":null}"#,
        r#"{"type":"file","id":3,"id":4,"path":"a","size":1}"#,
        r#"{"type":"file","type":"done","id":3,"path":"a","size":1}"#,
        r#"{"type":"done","id":3}"#,
        r#"{"type":"done","id":null,"blake3":"ab"}"#,
        r#"{"type":"shout","id":3}"#,
        r#"{"type":7}"#,
        r#"{"type":null}"#,
        r#"{"id":3,"path":"a","size":1}"#,
        r#"{"filename":"a","size":1}"#,
        r#""file""#,
        r#"{}"#,
        r#"{"type":"file","id":3,"path":"a","size":1"#,
    ];

    const SERVER_FRAMES: &[&str] = &[
        r#"{"type":"welcome","version":1,"server":"ferry-server 0.1"}"#,
        r#"{"type":"welcome","version":1,"server":"s","max_file_size":1024}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"stored","stored_as":"a (1).txt","bytes":4096,"blake3":"ab","clash":"renamed"}}"#,
        r#"{"outcome":{"blake3":"ab","bytes":1,"stored_as":"a","status":"stored"},"id":9,"type":"ack"}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"folder","path":"d"}}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"failed","code":"no_space","message":"full"}}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"failed","code":"from_the_future","message":"?"}}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"stored","stored_as":"a","bytes":1,"blake3":"ab","note":"new"}}"#,
        r#"{"type":"plan","verdicts":[{"id":0,"verdict":{"kind":"new"}}]}"#,
        r#"{"type":"error","code":"busy","message":"try later"}"#,
        // Refused by both.
        r#"{"type":"ack","id":9}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"stored","stored_as":"a","bytes":1}}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"lost"}}"#,
        r#"{"type":"ack","id":9,"outcome":{"stored_as":"a","bytes":1,"blake3":"ab"}}"#,
        r#"{"type":"ack","id":9,"outcome":"stored"}"#,
        r#"{"type":"ack","id":9,"outcome":null}"#,
        r#"{"type":"ack","id":9,"outcome":{"status":"stored","status":"failed","stored_as":"a","bytes":1,"blake3":"ab"}}"#,
        r#"{"type":"error","code":"busy"}"#,
        r#"{"type":"welcome","version":"1","server":"s"}"#,
        r#"{"type":"goodbye"}"#,
        r#"{"version":1,"server":"s"}"#,
    ];

    #[test]
    fn client_messages_read_as_the_derive_reads_them() {
        for json in CLIENT_FRAMES {
            let (fast, reference) = client_both(json);
            assert_eq!(fast, reference, "{json}");
        }
    }

    #[test]
    fn server_messages_read_as_the_derive_reads_them() {
        for json in SERVER_FRAMES {
            let (fast, reference) = server_both(json);
            assert_eq!(fast, reference, "{json}");
        }
    }

    #[test]
    fn both_lists_hold_messages_and_refusals() {
        let accepted = |both: (Option<Value>, Option<Value>)| both.1.is_some();
        let client: Vec<bool> = CLIENT_FRAMES
            .iter()
            .map(|j| accepted(client_both(j)))
            .collect();
        let server: Vec<bool> = SERVER_FRAMES
            .iter()
            .map(|j| accepted(server_both(j)))
            .collect();
        for seen in [client, server] {
            assert!(seen.contains(&true) && seen.contains(&false));
        }
    }

    #[test]
    fn a_missing_field_is_named_as_serde_names_it() {
        let err =
            serde_json::from_str::<ClientMsg>(r#"{"type":"done","id":3}"#).expect_err("no digest");
        assert!(err.to_string().contains("missing field `blake3`"), "{err}");
        let err = serde_json::from_str::<ServerMsg>(r#"{"type":"hello"}"#)
            .expect_err("not a server message");
        assert!(err.to_string().contains("unknown variant `hello`"), "{err}");
    }

    #[test]
    fn an_offset_past_the_size_is_refused_by_name() {
        let err = ClientMsg::parse(br#"{"type":"file","id":3,"path":"a","size":10,"offset":11}"#)
            .expect_err("offset past size");
        assert!(
            err.to_string()
                .contains("`offset` 11 is past the end of the file (`size` 10)"),
            "{err}"
        );
        // At the end is a resume with nothing left to send: still a file.
        assert!(
            ClientMsg::parse(br#"{"type":"file","id":3,"path":"a","size":10,"offset":10}"#).is_ok()
        );
    }

    #[test]
    fn the_three_differences_are_refusals() {
        for json in [
            // A field of another variant, of the wrong type.
            r#"{"type":"done","id":3,"blake3":"ab","size":"big"}"#,
            // A message as an array.
            r#"["file",3,"a",1]"#,
            // A body that would end before it starts.
            r#"{"type":"file","id":3,"path":"a","size":10,"offset":11}"#,
        ] {
            let (fast, reference) = client_both(json);
            assert!(fast.is_none(), "{json}");
            assert!(reference.is_some(), "{json}");
        }
    }
}
