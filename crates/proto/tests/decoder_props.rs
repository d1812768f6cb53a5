//! Property tests: arbitrary bytes never panic the decoders, and any split of
//! a valid stream decodes to the same frames.

use ferry_proto::{
    ClientMsg, FileHeader, OnClash, Opening, decode, read_frame, to_body, write_frame,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode(&bytes);
        let _ = read_frame(&mut &bytes[..]);
        let _ = Opening::parse(&bytes);
        let _ = ClientMsg::parse(&bytes);
        let _ = ferry_proto::path::components(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_frame_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 1..2048)) {
        let mut stream = Vec::new();
        write_frame(&mut stream, &body).expect("fits");
        let got = read_frame(&mut &stream[..]).expect("valid").expect("one frame");
        prop_assert_eq!(&got, &body);
        let _ = Opening::parse(&got);
        let _ = ClientMsg::parse(&got);
    }

    #[test]
    fn any_split_of_a_stream_decodes_the_same(
        paths in proptest::collection::vec("[a-z]{1,12}", 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let msgs: Vec<ClientMsg> = paths.iter().enumerate().map(|(i, p)| {
            ClientMsg::File(FileHeader { id: i as u64, path: p.clone(), size: i as u64, on_clash: OnClash::Rename, ..Default::default() })
        }).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            write_frame(&mut stream, &to_body(m)).expect("fits");
        }
        // Feed the stream in pieces cut at random points, as TCP might.
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut seen = Vec::new();
        for p in points {
            buf.extend_from_slice(&stream[fed..p]);
            fed = p;
            while let Some((used, body)) = decode(&buf).expect("valid") {
                seen.push(ClientMsg::parse(body).expect("parses"));
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(seen, msgs);
    }
}
