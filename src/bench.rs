//! `eddy bench nexmark`: built-in Nexmark queries over the built-in
//! generator, into a blackhole sink, with throughput per core (CPU time)
//! and peak memory.

use std::time::Instant;

use anyhow::{Context, bail};
use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig};
use eddy_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use eddy_planner::{Outcome, Session};

/// The bid stream as Flink's Nexmark DDL declares it.
fn bid_source(events: u64, rate: u64) -> String {
    format!(
        "CREATE SOURCE bid (
            auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            date_time TIMESTAMP(3), extra VARCHAR,
            WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
        ) WITH (connector = 'nexmark', table = 'bid', 'events.num' = '{events}', 'first-event.rate' = '{rate}');"
    )
}

/// The built-in queries, by name.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "q0",
        "SELECT auction, bidder, price, date_time, extra FROM bid",
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    ),
    (
        "tumble-count",
        "SELECT auction, window_start, window_end, COUNT(*) AS bids \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
         GROUP BY auction, window_start, window_end",
    ),
    (
        "hop-count",
        "SELECT auction, window_start, window_end, COUNT(*) AS bids \
         FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
         GROUP BY auction, window_start, window_end",
    ),
    (
        "session-count",
        "SELECT bidder, window_start, window_end, COUNT(*) AS bids \
         FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
         GROUP BY bidder, window_start, window_end",
    ),
    (
        "updating-count",
        "SELECT auction, COUNT(*) AS bids FROM bid GROUP BY auction",
    ),
    (
        // Nexmark q4's aggregate over an updating aggregate, without its join.
        "max-then-avg",
        "SELECT auction % 10 AS category, AVG(final) AS avg_final \
         FROM (SELECT auction, MAX(price) AS final FROM bid GROUP BY auction) t \
         GROUP BY auction % 10",
    ),
];

pub fn nexmark(
    query: &str,
    events: u64,
    parallelism: usize,
    rate: u64,
    explain: bool,
    checkpoint_interval_ms: i64,
) -> anyhow::Result<()> {
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    if query == "generator" {
        let generator = GeneratorConfig {
            first_event_rate: rate as f64,
            ..Default::default()
        };
        let mut source = NexmarkSource::new(NexmarkConfig::all_columns(
            EventType::Bid,
            events,
            generator,
        ));
        let mut rows = 0;
        while let Some(batch) = source.next_record_batch()? {
            rows += batch.num_rows();
        }
        report(query, events, rows as u64, started, cpu0);
        return Ok(());
    }
    let Some((_, select)) = QUERIES.iter().find(|(name, _)| *name == query) else {
        let names: Vec<&str> = QUERIES.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown query '{query}' (expected generator, {})",
            names.join(", ")
        );
    };
    let sql = format!(
        "{}\nCREATE SINK out WITH (connector = 'blackhole') AS {select};",
        bid_source(events, rate)
    );
    let mut session = Session::new(parallelism);
    session.settings.checkpoint_interval_ms = checkpoint_interval_ms;
    let outcomes = session
        .execute(&sql)
        .map_err(|e| anyhow::anyhow!("{}", e.render(&sql, query)))?;
    let jobs: Vec<_> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Job(j) => Some(j),
            _ => None,
        })
        .collect();
    if explain {
        for j in &jobs {
            print!("{}", j.graph.explain());
        }
    }
    let state = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
    let result = crate::run_jobs(jobs, &session, &state);
    let _ = std::fs::remove_dir_all(&state);
    result.context("the benchmark job failed")?;
    report(query, events, 0, started, cpu0);
    Ok(())
}

fn report(query: &str, events: u64, rows: u64, started: Instant, cpu0: f64) {
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("query:              {query}");
    println!("events:             {events}");
    if rows > 0 {
        println!("rows generated:     {rows}");
    }
    println!("seconds:            {secs:.3}");
    println!("events/s:           {:.0}", events as f64 / secs);
    println!(
        "cpu seconds:        {cpu:.3} ({:.2} cores used)",
        cpu / secs
    );
    println!("events/s per core:  {:.0}", events as f64 / cpu.max(1e-9));
    println!(
        "peak RSS:           {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 (1-based), in clock ticks of 1/100 s.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The peak resident set size (VmHWM) in KiB, from /proc (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
