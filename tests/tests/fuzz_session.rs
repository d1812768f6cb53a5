//! Property test of the server's session state machine: whatever sequence
//! of frames (well-formed messages in any order, with any field values, or
//! plain garbage) a client sends, the server neither crashes nor stores
//! anything outside its folder nor leaves a partial file visible, and it
//! goes on serving the next client. Runs a bounded number of cases.

use std::io::Write;
use std::time::Duration;

use ferry_e2e::{Server, V1, connect, raw_frame, tutorial_send};
use ferry_proto::{ClientMsg, FileHeader, OnClash, Outcome, PlanEntry, ServerMsg, to_body};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}(/[a-z]{1,8}){0,2}",
        Just("../escape".to_string()),
        Just("/abs".to_string()),
        Just(".ferry-staging/x".to_string()),
        "\\PC{0,12}",
    ]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let file = (
        any::<u64>(),
        path(),
        0u64..4096,
        any::<u64>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(id, path, size, offset, resume_key)| {
            to_body(&ClientMsg::File(FileHeader {
                id,
                path,
                size,
                on_clash: OnClash::Rename,
                offset: offset % 8192,
                resume_key,
                ..Default::default()
            }))
        });
    prop_oneof![
        file,
        (any::<u64>(), "[0-9a-f]{0,64}")
            .prop_map(|(id, blake3)| to_body(&ClientMsg::Done { id, blake3 })),
        (any::<u64>(), path()).prop_map(|(id, path)| to_body(&ClientMsg::Mkdir { id, path })),
        (any::<u64>(), "\\PC{0,20}")
            .prop_map(|(id, reason)| to_body(&ClientMsg::Abort { id, reason })),
        proptest::collection::vec((any::<u64>(), path(), any::<u64>()), 0..4).prop_map(|files| {
            to_body(&ClientMsg::Plan {
                files: files
                    .into_iter()
                    .map(|(id, path, size)| PlanEntry {
                        id,
                        path,
                        size,
                        on_clash: OnClash::Rename,
                        blake3: None,
                        resume_key: None,
                    })
                    .collect(),
            })
        }),
        proptest::collection::vec(any::<u8>(), 1..64),
    ]
}

/// A piece of a session: a frame around a message, or raw body bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => message().prop_map(|m| raw_frame(&m)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

/// One server for all the cases (started per case, the run would take
/// minutes), stopped at the end: a server in a `static` would never be
/// dropped, and its process and folder would outlive the test run.
#[test]
fn any_frame_sequence_leaves_the_server_sound() {
    let server = Server::start_with(&["--header-timeout", "1", "--body-timeout", "1"]);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let session = (any::<bool>(), proptest::collection::vec(piece(), 0..8));
    let result = runner.run(&session, |(v1, pieces)| {
        let mut s = connect(&server.addr());
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        if v1 {
            let hello = ClientMsg::Hello {
                version: 1,
                client: "fuzz".into(),
                token: None,
            };
            s.write_all(&raw_frame(&to_body(&hello))).expect("hello");
        }
        for p in &pieces {
            if s.write_all(p).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);

        // Still serving, and sound.
        let mut c = V1::connect(&server.addr());
        c.upload(1, "canary.txt", b"alive", OnClash::Overwrite);
        let stored = matches!(c.recv(), Some(ServerMsg::Ack(a)) if matches!(a.outcome, Outcome::Stored { .. }));
        prop_assert!(stored, "server stopped serving");
        let outside = std::fs::read_dir(server.root())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "uploads")
            .count();
        prop_assert_eq!(outside, 0, "something was written outside the folder");
        for f in server.files() {
            prop_assert!(
                !f.contains(".ferry-") || f.starts_with(".ferry-staging"),
                "hidden temporary visible: {}",
                f
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{}", server.log());
    }

    // A tutorial client after all that still works.
    tutorial_send(&server.addr(), "after-fuzz.txt", b"ok");
    server.expect_log("name=\"after-fuzz.txt\"");
}
