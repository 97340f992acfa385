//! State larger than memory: a window aggregate over millions of keys with
//! a small cache keeps its resident memory bounded, and still counts every
//! key. (The full-size figure, 10M keys under the default 64 MB cache, is
//! in BENCHMARKS.md.)

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;

use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig, bid, event_type};

/// Runs `eddy bench nexmark --query distinct-count` (a one-hour window
/// grouped by bidder and price); returns (peak RSS in MiB, rows out).
fn distinct_count(events: u64, cache: &str) -> (f64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["bench", "nexmark", "--query", "distinct-count"])
        .args(["--events", &events.to_string(), "--cache-size", cache])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no '{name}' in:\n{text}"));
        line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    (
        field("peak RSS:").parse().unwrap(),
        field("rows out:").parse().unwrap(),
    )
}

/// Distinct (bidder, price) pairs among the first `events` events, from
/// the generator itself.
fn distinct_pairs(events: u64) -> u64 {
    let generator = GeneratorConfig::default();
    let mut pairs = HashSet::new();
    for i in 0..events {
        let (number, id) = generator.event_id(i);
        if event_type(id) == EventType::Bid {
            let b = bid(&generator, id, generator.timestamp(number));
            pairs.insert((b.bidder, b.price));
        }
    }
    pairs.len() as u64
}

#[test]
fn a_window_over_millions_of_keys_stays_within_its_cache() {
    let (small, large) = (300_000, 3_000_000);
    let (rss_small, _) = distinct_count(small, "2mb");
    let (rss_large, rows) = distinct_count(large, "2mb");
    assert_eq!(rows, distinct_pairs(large), "every key counted once");
    assert!(rows > 2_000_000, "{rows} keys");
    // The same job with a cache that holds everything: its memory grows
    // with the keys. (RocksDB's own memory, up to 64 MB, fills in both.)
    let (rss_unbounded, unbounded_rows) = distinct_count(large, "8gb");
    assert_eq!(unbounded_rows, rows);
    let (spilled, held) = (rss_large - rss_small, rss_unbounded - rss_small);
    eprintln!(
        "peak RSS: {rss_small:.0} MiB at {small} events; at {large}: {rss_large:.0} MiB spilling, {rss_unbounded:.0} MiB in memory"
    );
    assert!(
        spilled * 2.0 < held,
        "spilling grew memory by {spilled:.0} MiB, holding everything by {held:.0} MiB"
    );
    assert!(
        spilled < 100.0,
        "grew by {spilled:.0} MiB with a 2 MB cache"
    );
}
