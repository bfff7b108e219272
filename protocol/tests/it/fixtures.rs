//! Encoded fixtures of every message, per protocol version, must keep decoding to the same values.
//!
//! `protocol/tests/fixtures/v1/*.bin` hold frames written by version 1: the first set, and the
//! frames of fields and messages added later under the codec's rules (`hello_store_epoch`,
//! `evidence_query`, `evidence_lost`, `command_result_recheck`). To add the fixtures of a new
//! version or a new message (never to rewrite old ones), run
//! `GRIDSENSE_WRITE_FIXTURES=v2 cargo test -p protocol --test it fixtures` and keep only the new
//! files.

use std::path::PathBuf;

use protocol::Codec;

use crate::helpers::samples;

fn dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
}

#[test]
fn version_1_fixtures_keep_decoding() {
    let codec = Codec::default();
    if let Ok(version) = std::env::var("GRIDSENSE_WRITE_FIXTURES") {
        std::fs::create_dir_all(dir(&version)).unwrap();
        for (name, msg) in samples() {
            std::fs::write(
                dir(&version).join(format!("{name}.bin")),
                codec.encode_to_vec(&msg).unwrap(),
            )
            .unwrap();
        }
    }
    let mut checked = 0;
    for (name, expected) in samples() {
        let path = dir("v1").join(format!("{name}.bin"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()));
        let (msg, used) = codec
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
            .unwrap();
        assert_eq!(used, bytes.len(), "fixture {name} has trailing bytes");
        assert_eq!(msg, expected, "fixture {name} decodes to something else");
        checked += 1;
    }
    let on_disk = std::fs::read_dir(dir("v1")).unwrap().count();
    assert_eq!(
        checked, on_disk,
        "a v1 fixture on disk has no sample to compare with"
    );
}
