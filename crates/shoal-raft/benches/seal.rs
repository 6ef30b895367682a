//! What encryption at rest costs a log entry (criterion): sealing (AES-256-GCM with a random
//! nonce, the entry's index as associated data) and opening entries of the sizes the log holds —
//! a status report (~256 B), a service spec (~4 KiB), a large key-value put (~64 KiB).
//!
//! Reproduce: `cargo bench -p shoal-raft --bench seal`. Compare with an fsync (1–10 ms here).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_raft::seal::DataKey;
use std::hint::black_box;

fn seal_and_open(c: &mut Criterion) {
    let key = DataKey::generate().expect("key");
    let mut group = c.benchmark_group("log entry");
    for size in [256usize, 4 * 1024, 64 * 1024] {
        let plain = vec![0x5au8; size];
        let place = 12_345u64.to_be_bytes();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plain, |b, plain| {
            b.iter(|| key.seal(black_box(&place), black_box(plain)).expect("seal"))
        });
        let sealed = key.seal(&place, &plain).expect("seal");
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, sealed| {
            b.iter(|| key.open(black_box(&place), black_box(sealed)).expect("open"))
        });
    }
    group.finish();
}

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
