//! The crash test: a job with a window aggregate, an updating aggregate, a
//! session window and an interval self-join under a Top-N over a bounded
//! Nexmark replay into file sinks is killed
//! with SIGKILL at random moments (and, in some runs, at fixed points inside
//! a checkpoint) and restarted from its state directory until it finishes,
//! sometimes at another parallelism. What the sinks committed must then be
//! exactly what an uninterrupted run commits: no row lost, none twice.
//!
//! The uninterrupted run's output is the reference; on its own it is
//! checked against the generator (every bid counted once) by the window
//! sink's totals.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig, bid, event_type};

const ITERATIONS: usize = 20;
const EVENTS: u64 = 24_000;
/// Events per second of event time, paced in real time: the replay takes
/// about a second, with a checkpoint every 100 ms.
const RATE: u64 = 24_000;
const SINKS: [&str; 5] = ["windows", "totals", "sessions", "bidders", "top"];

fn sql(out: &Path) -> String {
    let o = out.display();
    format!(
        "CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3),
           WATERMARK FOR date_time AS date_time - INTERVAL '50' MILLISECOND)
         WITH (connector = 'nexmark', table = 'bid', 'events.num' = '{EVENTS}',
               'first-event.rate' = '{RATE}', 'max-emit-speed' = 'false', 'batch.size' = '200');
         SET 'execution.checkpointing.interval' = '100 ms';
         CREATE SINK windows WITH (connector = 'file', path = '{o}/windows/') AS
         SELECT auction % 10 AS bucket, window_start, window_end, COUNT(*) AS n, MAX(price) AS top
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '100' MILLISECOND))
         GROUP BY auction % 10, window_start, window_end;
         CREATE SINK totals WITH (connector = 'file', path = '{o}/totals/') AS
         SELECT bidder % 7 AS b, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS top
         FROM bids GROUP BY bidder % 7;
         CREATE SINK sessions WITH (connector = 'file', path = '{o}/sessions/') AS
         SELECT bidder, window_start, window_end, COUNT(*) AS n
         FROM TABLE(SESSION(TABLE bids PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '20' MILLISECOND))
         GROUP BY bidder, window_start, window_end;
         SET 'state.cache.size' = '8 kb';
         CREATE SINK bidders WITH (connector = 'file', path = '{o}/bidders/') AS
         SELECT bidder, window_start, window_end, COUNT(*) AS n, SUM(price) AS total
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '250' MILLISECOND))
         GROUP BY bidder, window_start, window_end;
         CREATE SINK top WITH (connector = 'file', path = '{o}/top/') AS
         SELECT b, auction, price, rn FROM (
           SELECT b, auction, price,
                  ROW_NUMBER() OVER (PARTITION BY b ORDER BY price DESC, auction DESC) AS rn
           FROM (SELECT x.bidder % 7 AS b, x.auction AS auction, x.price + y.price AS price
                 FROM bids x JOIN bids y ON x.auction = y.auction AND x.bidder = y.bidder
                   AND y.date_time BETWEEN x.date_time AND x.date_time + INTERVAL '1' MILLISECOND))
         WHERE rn <= 3;"
    )
}

/// A small deterministic generator (xorshift), seeded per iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How one run of the job ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Finished,
    Killed,
    /// Stopped cleanly by SIGTERM, after a final checkpoint.
    Stopped,
}

/// How to interrupt a run.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Kill,
    Term,
}

/// Runs the job once; kills it after `kill_after` if still running.
fn run(
    sql_file: &Path,
    state: &Path,
    parallelism: usize,
    kill_after: Option<(Duration, Signal)>,
    crash_at: Option<&str>,
) -> Ended {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["run", sql_file.to_str().unwrap(), "--state-dir"])
        .arg(state)
        .args(["--parallelism", &parallelism.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("EDDY_CRASH_AT");
    if let Some(point) = crash_at {
        cmd.env("EDDY_CRASH_AT", point);
    }
    let mut child = cmd.spawn().unwrap();
    let mut kill_after = kill_after;
    let mut sent_term = false;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            if status.success() && stderr.contains("stopped after a final checkpoint") {
                return Ended::Stopped;
            }
            if status.success() {
                return Ended::Finished;
            }
            // Killed by its own crash point (SIGKILL, or SIGABRT should
            // `kill` be missing), by a SIGTERM that came before it installed
            // its handler (while it was still starting: nothing ran yet),
            // or a real failure.
            use std::os::unix::process::ExitStatusExt;
            let early_term = sent_term && status.signal() == Some(15);
            assert!(
                early_term || matches!(status.signal(), Some(9 | 6)),
                "eddy failed ({status}): {stderr}"
            );
            return Ended::Killed;
        }
        match kill_after {
            Some((after, Signal::Kill)) if started.elapsed() >= after => {
                child.kill().unwrap();
                child.wait().unwrap();
                return Ended::Killed;
            }
            Some((after, Signal::Term)) if started.elapsed() >= after => {
                let status = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
                sent_term = true;
                // Now wait for the clean stop.
                kill_after = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each sink's committed rows, as a sorted multiset of JSON lines.
fn committed(out: &Path) -> BTreeMap<&'static str, Vec<String>> {
    SINKS
        .iter()
        .map(|&sink| {
            let dir = out.join(sink);
            let mut lines: Vec<String> = if dir.exists() {
                common::committed_parts(&dir)
                    .lines()
                    .map(str::to_string)
                    .collect()
            } else {
                vec![]
            };
            lines.sort();
            (sink, lines)
        })
        .collect()
}

/// Fails with the rows only one side has (a few of them), not both lists.
fn assert_same<T: Ord + std::fmt::Debug + Clone>(got: &[T], want: &[T], what: &str) {
    if got == want {
        return;
    }
    let count = |v: &[T]| {
        let mut m: BTreeMap<T, i64> = BTreeMap::new();
        for x in v {
            *m.entry(x.clone()).or_default() += 1;
        }
        m
    };
    let (g, w) = (count(got), count(want));
    let extra: Vec<_> = g
        .iter()
        .filter(|(k, n)| w.get(*k) < Some(*n))
        .take(5)
        .collect();
    let missing: Vec<_> = w
        .iter()
        .filter(|(k, n)| g.get(*k) < Some(*n))
        .take(5)
        .collect();
    panic!(
        "{what}: {} rows committed, {} expected; extra (row, times): {extra:?}; missing: {missing:?}",
        got.len(),
        want.len()
    );
}

/// The net effect of a changelog: rows with their multiplicity.
fn net_effect(lines: &[String]) -> BTreeMap<String, i64> {
    let mut net = BTreeMap::new();
    for line in lines {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let op = v["op"].as_str().unwrap_or("+I").to_string();
        v.as_object_mut().unwrap().remove("op");
        let delta = if op == "-U" || op == "-D" { -1 } else { 1 };
        *net.entry(v.to_string()).or_default() += delta;
    }
    net.retain(|_, n| *n != 0);
    net
}

#[test]
fn killed_and_restarted_jobs_commit_exactly_the_uninterrupted_output() {
    let root = tempfile::tempdir().unwrap();
    let reference = {
        let dir = root.path().join("reference");
        let sql_file = root.path().join("reference.sql");
        std::fs::write(&sql_file, sql(&dir)).unwrap();
        let ended = run(&sql_file, &dir.join("state"), 1, None, None);
        assert_eq!(ended, Ended::Finished);
        committed(&dir)
    };
    // The reference itself, against the generator: the windows count every
    // bid exactly once, and the totals' changelog ends at each group's
    // count, sum and maximum.
    let generator = GeneratorConfig {
        first_event_rate: RATE as f64,
        ..GeneratorConfig::default()
    };
    let mut expected: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    // The self-join's pairs: bids by (auction, bidder), with time and price.
    let mut pairs: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    // The bidders' windows (spilled past an 8 KB cache): by window start
    // and bidder, the count and sum.
    let mut by_bidder: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..EVENTS {
        let (number, id) = generator.event_id(i);
        if event_type(id) == EventType::Bid {
            let b = bid(&generator, id, generator.timestamp(number));
            let e = expected.entry(b.bidder % 7).or_insert((0, 0, i64::MIN));
            *e = (e.0 + 1, e.1 + b.price, e.2.max(b.price));
            let w = by_bidder
                .entry((b.date_time - b.date_time % 250, b.bidder))
                .or_default();
            *w = (w.0 + 1, w.1 + b.price);
            times.entry(b.bidder).or_default().push(b.date_time);
            pairs
                .entry((b.auction, b.bidder))
                .or_default()
                .push((b.date_time, b.price));
        }
    }
    // Sessions with a 20 ms gap: per bidder, a new one wherever two
    // consecutive bids are 20 ms or more apart. Compared as (bidder, rows).
    let mut sessions: Vec<(i64, i64)> = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        let mut n = 1;
        for w in ts.windows(2) {
            if w[1] - w[0] >= 20 {
                sessions.push((bidder, n));
                n = 0;
            }
            n += 1;
        }
        sessions.push((bidder, n));
    }
    sessions.sort_unstable();
    let mut got_sessions: Vec<(i64, i64)> = reference["sessions"]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["bidder"].as_i64().unwrap(), v["n"].as_i64().unwrap())
        })
        .collect();
    got_sessions.sort_unstable();
    assert_same(&got_sessions, &sessions, "the uninterrupted run's sessions");
    let mut bidders: Vec<(i64, i64, i64)> = by_bidder
        .iter()
        .map(|(&(_, bidder), &(n, total))| (bidder, n, total))
        .collect();
    bidders.sort_unstable();
    let mut got_bidders: Vec<(i64, i64, i64)> = reference["bidders"]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let int = |k: &str| v[k].as_i64().unwrap();
            (int("bidder"), int("n"), int("total"))
        })
        .collect();
    got_bidders.sort_unstable();
    assert_same(
        &got_bidders,
        &bidders,
        "the uninterrupted run's bidder windows",
    );
    let totals: BTreeMap<i64, (i64, i64, i64)> = net_effect(&reference["totals"])
        .into_iter()
        .map(|(row, n)| {
            assert_eq!(n, 1, "one final row per group: {row}");
            let v: serde_json::Value = serde_json::from_str(&row).unwrap();
            let int = |k: &str| v[k].as_i64().unwrap();
            (int("b"), (int("n"), int("total"), int("top")))
        })
        .collect();
    assert_eq!(totals, expected, "the uninterrupted run's totals");
    let counted: u64 = reference["windows"]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["n"].as_u64().unwrap()
        })
        .sum();
    let bids = (0..EVENTS)
        .filter(|&i| event_type(generator.event_id(i).1) == EventType::Bid)
        .count() as u64;
    assert_eq!(counted, bids, "the uninterrupted run counts every bid");
    assert!(!reference["totals"].is_empty() && !reference["sessions"].is_empty());
    // The Top-N over the join: per bidder % 7, the three largest sums of
    // two bids (x, y) of one bidder on one auction with y at most 1 ms
    // after x (a bid pairs with itself), as (b, auction, price, rank).
    let mut sums: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for ((auction, bidder), bids) in &pairs {
        for x in bids {
            for y in bids.iter().filter(|y| y.0 >= x.0 && y.0 <= x.0 + 1) {
                sums.entry(bidder % 7)
                    .or_default()
                    .push((x.1 + y.1, *auction));
            }
        }
    }
    let mut top: Vec<String> = Vec::new();
    for (b, mut s) in sums {
        s.sort_unstable_by(|p, q| q.cmp(p));
        for (rank, (price, auction)) in s.into_iter().take(3).enumerate() {
            let rn = rank + 1;
            top.push(format!(
                r#"{{"auction":{auction},"b":{b},"price":{price},"rn":{rn}}}"#
            ));
        }
    }
    top.sort();
    let got_top: Vec<String> = net_effect(&reference["top"])
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n.max(0) as usize))
        .collect();
    assert_same(
        &got_top,
        &top,
        "the uninterrupted run's Top-N over the join",
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut checkpoint_crashes = 0;
    let mut stops = 0;
    for iteration in 0..ITERATIONS {
        let dir = root.path().join(format!("run-{iteration}"));
        let sql_file = root.path().join(format!("run-{iteration}.sql"));
        std::fs::write(&sql_file, sql(&dir)).unwrap();
        let state = dir.join("state");
        let mut rescaled = false;
        let mut parallelism = 1;
        for attempt in 0.. {
            assert!(attempt < 40, "iteration {iteration} never finished");
            // A quarter of the iterations restart at parallelism 2 now and
            // then: key groups move between subtasks.
            if iteration % 4 == 3 && attempt > 0 {
                parallelism = 1 + rng.below(2) as usize;
                rescaled |= parallelism != 1;
            }
            // Some runs die inside a checkpoint, at a fixed point.
            let crash_at = match (attempt, iteration % 5) {
                (0, 1) => Some("state-written"),
                (0, 2) => Some("manifest-written"),
                _ => None,
            };
            // Later attempts live longer, so every iteration finishes.
            let signal = if rng.below(4) == 0 {
                Signal::Term
            } else {
                Signal::Kill
            };
            let kill_after = (crash_at.is_none() && attempt < 6).then(|| {
                (
                    Duration::from_millis(rng.below(900 + 150 * attempt)),
                    signal,
                )
            });
            match run(&sql_file, &state, parallelism, kill_after, crash_at) {
                Ended::Finished => break,
                Ended::Killed if crash_at.is_some() => checkpoint_crashes += 1,
                Ended::Killed => kills += 1,
                Ended::Stopped => stops += 1,
            }
        }
        let got = committed(&dir);
        let context = format!("iteration {iteration} (seed {seed})");
        assert_same(
            &got["windows"],
            &reference["windows"],
            &format!("windows, {context}"),
        );
        assert_same(
            &got["sessions"],
            &reference["sessions"],
            &format!("sessions, {context}"),
        );
        assert_same(
            &got["bidders"],
            &reference["bidders"],
            &format!("bidder windows, {context}"),
        );
        // The join's two inputs interleave differently from run to run, so
        // its Top-N's changelog does too; what it amounts to does not.
        let net =
            |lines: &[String]| -> Vec<(String, i64)> { net_effect(lines).into_iter().collect() };
        assert_same(
            &net(&got["top"]),
            &net(&reference["top"]),
            &format!("Top-N over a join, {context}"),
        );
        if rescaled {
            // Subtasks interleave their changes differently; what the
            // changelog amounts to is the same.
            let net = |lines: &[String]| -> Vec<(String, i64)> {
                net_effect(lines).into_iter().collect()
            };
            assert_same(
                &net(&got["totals"]),
                &net(&reference["totals"]),
                &format!("totals, {context}"),
            );
        } else {
            assert_same(
                &got["totals"],
                &reference["totals"],
                &format!("totals, {context}"),
            );
        }
    }
    eprintln!(
        "{kills} random kills, {checkpoint_crashes} kills inside checkpoints, {stops} clean stops"
    );
    assert!(kills >= ITERATIONS / 2, "too few random kills: {kills}");
    assert!(checkpoint_crashes > 0);
    assert!(stops > 0, "no run was stopped by SIGTERM");
}
