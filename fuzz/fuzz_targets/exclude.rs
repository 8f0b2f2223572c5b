//! Exclude files: never a panic, whatever the patterns and paths.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use unifs::unify::exclude::Excludes;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The last line is also a path to decide.
    let path = format!("/{}", text.lines().last().unwrap_or(""));
    if let Ok(ex) = Excludes::new([("fuzz".to_string(), &*text)]) {
        let _ = ex.is_excluded(Path::new(&path));
        let _ = ex.rules();
    }
});
