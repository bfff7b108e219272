//! decode(encode(x)) == x for every message, and arbitrary bytes never panic the decoder.

use proptest::prelude::*;
use protocol::{Codec, DecodeError, FRAME_HEADER_BYTES};

use crate::helpers::{message, samples};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_survives_a_round_trip(msg in message()) {
        let codec = Codec::default();
        let frame = codec.encode_to_vec(&msg).unwrap();
        let (back, used) = codec.decode(&frame).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let codec = Codec::new(256);
        if let Ok(Some((_, used))) = codec.decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = codec.decode_payload(&bytes);
    }

    #[test]
    fn corrupted_frames_never_panic_the_decoder(idx in 0usize..13, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let codec = Codec::default();
        let (_, msg) = &samples()[idx];
        let mut frame = codec.encode_to_vec(msg).unwrap();
        for (pos, xor) in flips {
            let i = FRAME_HEADER_BYTES + pos % (frame.len() - FRAME_HEADER_BYTES);
            frame[i] ^= xor;
        }
        let _ = codec.decode(&frame);
    }

    #[test]
    fn a_frame_over_the_maximum_is_refused_from_its_header(len in 1025u32.., tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let codec = Codec::new(1024);
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend(tail);
        let refused = matches!(codec.decode(&buf), Err(DecodeError::FrameTooLarge { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn samples_cover_every_message_type() {
    let kinds: std::collections::BTreeSet<&str> = samples().iter().map(|(_, m)| m.kind()).collect();
    let expected = [
        "hello",
        "welcome",
        "event_batch",
        "ack",
        "evidence_chunk",
        "evidence_ack",
        "evidence_query",
        "evidence_lost",
        "health",
        "command",
        "command_result",
        "enroll_request",
        "enroll_response",
        "bye",
    ];
    assert_eq!(kinds, expected.into_iter().collect());
}

#[test]
fn a_huge_declared_collection_does_not_allocate_it() {
    // An event batch claiming 2^32-1 events in a 20-byte payload must fail, not allocate.
    let mut payload = vec![0x82]; // map of 2
    payload.extend(rmp_type("type"));
    payload.extend(rmp_type("event_batch"));
    payload.extend(rmp_type("events"));
    payload.extend([0xdd, 0xff, 0xff, 0xff, 0xff]); // array32 of 4294967295
    let err = Codec::default().decode_payload(&payload).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }));
}

fn rmp_type(s: &str) -> Vec<u8> {
    let mut v = vec![0xa0 | u8::try_from(s.len()).unwrap()];
    v.extend(s.as_bytes());
    v
}
