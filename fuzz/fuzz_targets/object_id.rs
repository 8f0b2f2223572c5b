//! Object ids (manifests, the catalog, store file names): parsed only
//! from 64 hex digits, written back the same (lowercase).
#![no_main]
use libfuzzer_sys::fuzz_target;
use unifs::store::ObjectId;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<ObjectId>() {
        Ok(id) => assert_eq!(id.to_hex(), s.to_ascii_lowercase()),
        Err(_) => assert!(s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit())),
    }
    let hex = unifs::backup::manifest::from_hex(s);
    if let Some(bytes) = hex {
        assert_eq!(
            unifs::backup::manifest::to_hex(&bytes),
            s.to_ascii_lowercase()
        );
    }
});
