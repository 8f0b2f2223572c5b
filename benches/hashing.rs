//! Object-id hashing throughput: `unifs::store::id::hash_reader` over
//! in-memory buffers of 4 KiB, 64 KiB, 1 MiB and 16 MiB.
//!
//! Run with `cargo bench --bench hashing`. Sample sizes are kept small so the
//! whole run takes well under a minute.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::ffi::OsString;
use std::hint::black_box;
use std::time::Duration;
use unifs::store::id::{hash_reader, ObjectHasher, ObjectMeta};
use unifs::sys::Timestamp;

const SIZES: &[(usize, &str)] = &[
    (4 << 10, "4KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (16 << 20, "16MiB"),
];

/// Deterministic, incompressible-looking content (xorshift), so nothing about
/// the data favours the hasher.
fn content(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Typical metadata of a file in a Debian root: 0644 root:root, an mtime,
/// one xattr (so the header is not the trivial one).
fn meta(size: usize) -> ObjectMeta {
    ObjectMeta {
        perm: 0o644,
        uid: 0,
        gid: 0,
        mtime: Some(Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        }),
        xattrs: vec![(OsString::from("user.bench"), b"value".to_vec())],
        size: size as u64,
    }
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash_reader");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &(len, label) in SIZES {
        let data = content(len);
        let meta = meta(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| hash_reader(black_box(&meta), black_box(&data[..])).unwrap())
        });
    }
    group.finish();
}

/// The same bytes fed straight into an `ObjectHasher`, without the reader
/// loop: the difference to `hash_reader` is the per-call overhead (its read
/// buffer), which matters for the many small files of a guest.
fn hashing_in_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("object_hasher_update");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &(len, label) in &SIZES[..2] {
        let data = content(len);
        let meta = meta(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| {
                let mut h = ObjectHasher::new(black_box(&meta));
                h.update(black_box(&data[..]));
                h.finish()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hashing, hashing_in_memory);
criterion_main!(benches);
