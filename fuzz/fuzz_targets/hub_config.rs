//! Fuzzes the hub config file as `hub serve` and `hub check-config` read it: any text must parse
//! and validate or give problems naming lines and keys, never panic; the report renders. (The
//! files a config names are not opened here: that is `check-config`'s file check.)
#![no_main]

use std::path::Path;

use hub::config::HubConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = HubConfig::from_toml_str(text);
    let check = confcheck::parse_text::<HubConfig>(text, Path::new("fuzz.toml"));
    let _ = check.render();
});
