//! `eddy bench nexmark`: built-in Nexmark queries over the built-in
//! generator, into a blackhole sink, with throughput per core (CPU time)
//! and peak memory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig};
use eddy_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use eddy_planner::Outcome;

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

/// The Nexmark queries q0–q23 as `tests/nexmark/` writes them (Flink's SQL
/// and column names), over the three sources of its `ddl.sql`.
const NEXMARK: [&str; 24] = [
    include_str!("../tests/nexmark/q0.sql"),
    include_str!("../tests/nexmark/q1.sql"),
    include_str!("../tests/nexmark/q2.sql"),
    include_str!("../tests/nexmark/q3.sql"),
    include_str!("../tests/nexmark/q4.sql"),
    include_str!("../tests/nexmark/q5.sql"),
    include_str!("../tests/nexmark/q6.sql"),
    include_str!("../tests/nexmark/q7.sql"),
    include_str!("../tests/nexmark/q8.sql"),
    include_str!("../tests/nexmark/q9.sql"),
    include_str!("../tests/nexmark/q10.sql"),
    include_str!("../tests/nexmark/q11.sql"),
    include_str!("../tests/nexmark/q12.sql"),
    include_str!("../tests/nexmark/q13.sql"),
    include_str!("../tests/nexmark/q14.sql"),
    include_str!("../tests/nexmark/q15.sql"),
    include_str!("../tests/nexmark/q16.sql"),
    include_str!("../tests/nexmark/q17.sql"),
    include_str!("../tests/nexmark/q18.sql"),
    include_str!("../tests/nexmark/q19.sql"),
    include_str!("../tests/nexmark/q20.sql"),
    include_str!("../tests/nexmark/q21.sql"),
    include_str!("../tests/nexmark/q22.sql"),
    include_str!("../tests/nexmark/q23.sql"),
];
const NEXMARK_DDL: &str = include_str!("../tests/nexmark/ddl.sql");
/// q13's side input, which the DDL reads from this path; `eddy bench`
/// writes the copy built into the binary under the run's directory, so it
/// runs from any directory.
const SIDE_INPUT: (&str, &str) = (
    "tests/nexmark/side_input.csv",
    include_str!("../tests/nexmark/side_input.csv"),
);

/// The SQL of Nexmark query `qN`: its sources, sized to `events` at `rate`,
/// and the query into a blackhole sink; q10 writes into a file sink under
/// `dir` partitioned by day and minute, as in Flink's suite.
fn nexmark_sql(name: &str, events: u64, rate: u64, dir: &std::path::Path) -> Option<String> {
    let n: usize = name.strip_prefix('q')?.parse().ok()?;
    let query = NEXMARK.get(n)?;
    let side_input = dir.join("side_input.csv");
    let ddl = NEXMARK_DDL
        .replace(
            "'events.num' = '100000'",
            &format!("'events.num' = '{events}', 'first-event.rate' = '{rate}'"),
        )
        .replace(SIDE_INPUT.0, &side_input.display().to_string());
    let sink = if n == 10 {
        format!(
            "PARTITIONED BY (dt, hm) WITH (connector = 'file', path = '{}/', format = 'json')",
            dir.join("q10").display()
        )
    } else {
        "WITH (connector = 'blackhole')".to_string()
    };
    Some(format!(
        "{ddl}\nCREATE SINK out {sink} AS {};",
        query.trim().trim_end_matches(';')
    ))
}

/// More queries over the bid stream alone, by name.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "tumble-count",
        "SELECT auction, window_start, window_end, COUNT(*) AS bids \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
         GROUP BY auction, window_start, window_end",
    ),
    (
        // Close to one key per bid: the window state grows with the input
        // (state larger than memory, with `--events` in the millions).
        "distinct-count",
        "SELECT bidder, price, window_start, window_end, COUNT(*) AS bids \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' HOUR)) \
         GROUP BY bidder, price, window_start, window_end",
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

/// `eddy bench nexmark`'s options.
#[derive(clap::Args, Debug)]
pub struct NexmarkArgs {
    /// A Nexmark query, q0 to q23 (as `tests/nexmark/qN.sql` writes it),
    /// or tumble-count, distinct-count, hop-count (q5's first stage),
    /// session-count, updating-count, max-then-avg, or `generator` (the
    /// generator alone).
    #[arg(long, default_value = "q0")]
    query: String,
    /// Number of generated events (persons, auctions and bids).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Subtasks per keyed operator.
    #[arg(long, short = 'p', default_value_t = 1)]
    parallelism: usize,
    /// Event-time rate of the generator (events per second of event time).
    #[arg(long, default_value_t = 10_000_000)]
    rate: u64,
    /// Print the query's plan before running it.
    #[arg(long)]
    explain: bool,
    /// Checkpoint this often (e.g. `1s`); `0`, the default, checkpoints
    /// only at the end.
    #[arg(long, value_parser = crate::parse_interval, default_value = "0")]
    checkpoint_interval: i64,
    /// In-memory state per operator subtask before it spills to RocksDB
    /// (`'state.cache.size'`, e.g. `64mb`, the default).
    #[arg(long, value_parser = parse_size)]
    cache_size: Option<u64>,
    /// Keep the job's state here (resuming from it if it holds a
    /// checkpoint) instead of a temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Stop the job (as Ctrl-C does: a checkpoint, then the end) after
    /// this long, e.g. `2s`.
    #[arg(long, value_parser = crate::parse_interval)]
    stop_after: Option<i64>,
    /// A setting, as `SET 'key' = 'value'` would make it, e.g.
    /// `--set table.exec.state.ttl=1h`; repeat for more.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, not '{text}'"))?;
    let unquote = |s: &str| {
        let s = s.trim();
        s.strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or(s)
            .to_string()
    };
    Ok((unquote(key), unquote(value)))
}

/// `SET` statements for `settings`, quoted as SQL strings.
fn set_statements(settings: &[(String, String)]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    settings
        .iter()
        .map(|(k, v)| format!("SET {} = {};\n", quote(k), quote(v)))
        .collect()
}

fn parse_size(text: &str) -> Result<u64, String> {
    eddy_connectors::parse_memory_bytes(text)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("cannot read the memory size '{text}' (write e.g. 64mb or 1gb)"))
}

pub fn nexmark(args: &NexmarkArgs) -> anyhow::Result<()> {
    let NexmarkArgs {
        ref query,
        events,
        parallelism,
        rate,
        explain,
        checkpoint_interval,
        cache_size,
        ref state_dir,
        stop_after,
        ref settings,
    } = *args;
    let query = query.as_str();
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
        report(query, events, rows as u64, started, cpu0, None);
        return Ok(());
    }
    let state = state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id())));
    std::fs::create_dir_all(&state)
        .and_then(|()| std::fs::write(state.join("side_input.csv"), SIDE_INPUT.1))
        .with_context(|| format!("cannot write q13's side input into {}", state.display()))?;
    let sql = match (
        nexmark_sql(query, events, rate, &state),
        QUERIES.iter().find(|(name, _)| *name == query),
    ) {
        (Some(sql), _) => sql,
        (None, Some((_, select))) => format!(
            "{}\nCREATE SINK out WITH (connector = 'blackhole') AS {select};",
            bid_source(events, rate)
        ),
        (None, None) => {
            let names: Vec<&str> = QUERIES.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown query '{query}' (expected q0 to q23, generator, {})",
                names.join(", ")
            );
        }
    };
    let mut session = crate::new_session(parallelism);
    session.settings.checkpoint_interval_ms = checkpoint_interval;
    session.settings.state_cache_bytes = cache_size;
    let sql = format!("{}{sql}", set_statements(settings));
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
    let stop_after = stop_after.map(|ms| Duration::from_millis(ms.max(0) as u64));
    let result = crate::run_jobs(jobs, &session, &state, stop_after, true);
    if state_dir.is_none() {
        let _ = std::fs::remove_dir_all(&state);
    }
    let run = result.context("the benchmark job failed")?;
    // Events read (fewer than `--events` if stopped early): a query of
    // several sources reads every generated event once per source.
    let (done, total) = run.totals.progress;
    let read = if total > 0 {
        (events as u128 * done as u128 / total as u128) as u64
    } else {
        done
    };
    report(query, read, 0, started, cpu0, Some(&run));
    Ok(())
}

fn report(
    query: &str,
    events: u64,
    rows: u64,
    started: Instant,
    cpu0: f64,
    run: Option<&crate::RunReport>,
) {
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
    let Some(run) = run else { return };
    let m = &run.totals;
    println!("rows out:           {}", m.rows_out);
    let chk = m.checkpoints;
    if chk.completed > 0 {
        println!(
            "checkpoints:        {} (longest {} ms; last: id {}, {} ms, {:.1} MB, aligned in {} ms)",
            chk.completed,
            chk.max_duration_ms,
            chk.id,
            chk.duration_ms,
            chk.size_bytes as f64 / 1e6,
            chk.alignment_ms
        );
    }
    if m.spilled_bytes > 0 {
        println!("spilled to RocksDB: {:.1} MB", m.spilled_bytes as f64 / 1e6);
    }
    if m.expired_keys > 0 {
        println!("idle keys expired:  {}", m.expired_keys);
    }
    if let Some((id, ms)) = run.restore_ms {
        println!("resumed:            from checkpoint {id}, state restored in {ms} ms");
    }
    if run.stopped {
        println!("stopped:            after a final checkpoint");
    }
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
