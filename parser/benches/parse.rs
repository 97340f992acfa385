//! How fast a large file of mixed statements parses: 1 MB of DDL, sinks,
//! window queries, joins and Nexmark queries.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn mixed_statements(target_bytes: usize) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/nexmark");
    let mut pieces: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/nexmark")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect();
    pieces.sort();
    let mut out = String::new();
    let mut i = 0;
    while out.len() < target_bytes {
        out += &pieces[i % pieces.len()];
        out += ";\n";
        i += 1;
    }
    out
}

fn parse_one_megabyte(c: &mut Criterion) {
    let sql = mixed_statements(1 << 20);
    let mut group = c.benchmark_group("parser");
    group.throughput(Throughput::Bytes(sql.len() as u64));
    group.sample_size(20);
    group.bench_function("parse 1 MB of mixed statements", |b| {
        b.iter(|| eddy_parser::parse_statements(&sql).expect("the file parses"))
    });
    group.finish();
}

criterion_group!(benches, parse_one_megabyte);
criterion_main!(benches);
