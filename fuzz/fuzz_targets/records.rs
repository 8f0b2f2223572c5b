//! The keeper's records (state.json, exit.json) and a guest's config: never
//! a panic reading them or showing what they hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use unifs::guest::config::GuestConfig;
use unifs::guest::state::{Exit, State};

fuzz_target!(|data: &[u8]| {
    if let Ok(exit) = serde_json::from_slice::<Exit>(data) {
        let _ = (exit.describe(), exit.short());
    }
    if let Ok(st) = serde_json::from_slice::<State>(data) {
        let _ = serde_json::to_string(&st).unwrap();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = toml::from_str::<GuestConfig>(text) {
            let _ = cfg.limits();
        }
        use unifs::guest::spec;
        let _ = spec::parse_size(text);
        // A signal read is the one its name names.
        if let Ok(n) = spec::parse_signal(text) {
            assert_eq!(spec::parse_signal(&spec::signal_name(n)).unwrap(), n);
            let name = spec::signal_name(n);
            let plain = text.trim().to_ascii_uppercase();
            let plain = plain.strip_prefix("SIG").unwrap_or(&plain);
            assert!(
                plain.parse::<i32>().is_ok()
                    || name.ends_with(plain)
                    || plain.starts_with("RT")
                    || text.trim() == name,
                "{text:?} read as {name}"
            );
            if let Some(rest) = plain.strip_prefix("RTMIN").or(plain.strip_prefix("RTMAX")) {
                assert!(
                    rest.is_empty()
                        || rest
                            .get(1..)
                            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())),
                    "{text:?} read as {name}"
                );
            }
        }
        let _ = text.parse::<spec::Bind>();
        let _ = text.parse::<spec::Rlimit>();
        let _ = text.parse::<spec::Tmpfs>();
        let _ = text.parse::<unifs::guest::devices::Device>();
    }
});
