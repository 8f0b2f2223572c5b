//! unify's kept listings file, its hash made right so that the parser
//! behind it is reached: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use unifs::unify::listings::Listings;

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"unifsLs2".to_vec();
    bytes.extend_from_slice(data);
    let hash = blake3::hash(&bytes);
    bytes.extend_from_slice(hash.as_bytes());
    // One file per fuzzing process, in its own directory (removed by hand).
    let dir = std::env::temp_dir().join(format!("unifs-fuzz-listings-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let file = dir.join("listings");
    std::fs::write(&file, &bytes).unwrap();
    let _ = Listings::load(&file);
});
