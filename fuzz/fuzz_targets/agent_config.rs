//! Fuzzes the edge agent's config file as `edge-agent run` and `check-config` read it: any text
//! must parse and validate or give problems naming lines and keys, never panic; the report
//! renders.
#![no_main]

use std::path::Path;

use edge_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml_str(text, "fuzz.toml");
    let mut check = confcheck::parse_text::<Config>(text, Path::new("fuzz.toml"));
    if let Some(config) = &check.config {
        check.problems.extend(config.validate());
    }
    let _ = check.render();
});
