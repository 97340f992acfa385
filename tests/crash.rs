//! The crash test: jobs with a window aggregate, an updating aggregate, a
//! session window, an interval self-join under a Top-N, a regular join of
//! the bids with a file, a keep-first deduplication, and windows over a
//! file read as many byte ranges, over a bounded Nexmark replay, into file
//! sinks, are killed with SIGKILL (or stopped with SIGTERM) at random
//! checkpoints (and, in some runs, at fixed points inside a checkpoint) and
//! restarted from their state directory until they finish, at changing
//! parallelism (1 → 4 → 2 and random after). What the sinks committed must
//! then be exactly what an uninterrupted run commits: no row lost, none
//! twice.
//!
//! The uninterrupted run's output is the reference; on its own it is
//! checked against answers computed here from the generator and the file.
//!
//! Kills are not timed: a run is killed once its job has completed a
//! random number of checkpoints (seen in its state directory), so a slow
//! machine changes nothing, and a signal never arrives before eddy has
//! installed its handler. The seed is printed; `EDDY_CRASH_SEED=<n>` runs
//! the same kills again.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use eddy_connectors::nexmark::generator::{EventType, GeneratorConfig, bid, event_type};

const ITERATIONS: usize = 20;
const EVENTS: u64 = 24_000;
/// Events per second of event time, paced in real time: the replay takes
/// about a second, with a checkpoint every 100 ms.
const RATE: u64 = 24_000;
const SINKS: [&str; 8] = [
    "windows",
    "totals",
    "sessions",
    "bidders",
    "top",
    "joined",
    "firsts",
    "click_windows",
];
/// Rows of the file source, and the byte ranges it is cut into.
const CLICKS: i64 = 30_000;
const CLICK_KEYS: i64 = 10;

/// The file: `k` cycles over 0..10, `ts` one per millisecond from 0.
fn write_clicks(path: &Path) {
    let text: String = (0..CLICKS)
        .map(|i| format!("{{\"k\": {}, \"ts\": {i}}}\n", i % CLICK_KEYS))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn sql(out: &Path, clicks: &Path) -> String {
    let o = out.display();
    let c = clicks.display();
    format!(
        "CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3),
           WATERMARK FOR date_time AS date_time - INTERVAL '50' MILLISECOND)
         WITH (connector = 'nexmark', table = 'bid', 'events.num' = '{EVENTS}',
               'first-event.rate' = '{RATE}', 'max-emit-speed' = 'false', 'batch.size' = '200');
         CREATE SOURCE clicks (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
         WITH (connector = 'file', path = '{c}', 'source.split-size' = '32 kb', 'batch.size' = '10');
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
         WHERE rn <= 3;
         SET 'state.cache.size' = '64 mb';
         CREATE SINK joined WITH (connector = 'file', path = '{o}/joined/') AS
         SELECT c.k AS k, COUNT(*) AS n FROM bids b JOIN clicks c ON b.auction % {CLICK_KEYS} = c.k
         WHERE c.ts < TIMESTAMP '1970-01-01 00:00:00.300' GROUP BY c.k;
         CREATE SINK firsts WITH (connector = 'file', path = '{o}/firsts/') AS
         SELECT bidder, date_time FROM (
           SELECT bidder, date_time, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY date_time ASC) AS rn
           FROM bids)
         WHERE rn = 1;
         CREATE SINK click_windows WITH (connector = 'file', path = '{o}/click_windows/') AS
         SELECT k, window_start, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY k, window_start, window_end;"
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

/// Runs the job once; with `kill`, signals it once it has completed that
/// many more checkpoints (if it is still running then).
fn run(
    sql_file: &Path,
    state: &Path,
    parallelism: usize,
    kill: Option<(u64, Signal)>,
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
    let before = common::highest_checkpoint(state);
    let mut child = cmd.spawn().unwrap();
    let mut kill = kill;
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
            // `kill` be missing), or a real failure.
            use std::os::unix::process::ExitStatusExt;
            assert!(
                matches!(status.signal(), Some(9 | 6)),
                "eddy failed ({status}): {stderr}"
            );
            return Ended::Killed;
        }
        match kill {
            Some((n, signal)) if common::highest_checkpoint(state) >= before + n => {
                // The job checkpointed, so eddy's handler is installed: a
                // SIGTERM is a clean stop, never an early death.
                if let Signal::Kill = signal {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    return Ended::Killed;
                }
                let status = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
                // Now wait for the clean stop.
                kill = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(2));
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

/// The sinks over the file, and the join and deduplication, against
/// answers computed here.
fn check_new_sinks(reference: &BTreeMap<&'static str, Vec<String>>, generator: &GeneratorConfig) {
    let int = |row: &str, k: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(row).unwrap();
        v[k].as_i64().unwrap_or_else(|| panic!("{k} in {row}"))
    };
    // Per key of the first 300 clicks (30 each), every bid whose auction
    // % 10 is the key, 30 times.
    let mut bids_by_key = BTreeMap::new();
    let mut first_bid: BTreeMap<i64, i64> = BTreeMap::new();
    for i in 0..EVENTS {
        let (number, id) = generator.event_id(i);
        if event_type(id) == EventType::Bid {
            let b = bid(generator, id, generator.timestamp(number));
            *bids_by_key.entry(b.auction % CLICK_KEYS).or_insert(0i64) += 30;
            let first = first_bid.entry(b.bidder).or_insert(b.date_time);
            *first = (*first).min(b.date_time);
        }
    }
    let joined: BTreeMap<i64, i64> = net_effect(&reference["joined"])
        .into_iter()
        .map(|(row, n)| {
            assert_eq!(n, 1, "one final row per key: {row}");
            (int(&row, "k"), int(&row, "n"))
        })
        .collect();
    assert_eq!(joined, bids_by_key, "the regular join's counts");
    // Keep-first deduplication: each bidder once, at its first bid's time.
    let firsts: BTreeMap<i64, String> = reference["firsts"]
        .iter()
        .map(|row| {
            let v: serde_json::Value = serde_json::from_str(row).unwrap();
            (
                int(row, "bidder"),
                v["date_time"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(firsts.len(), reference["firsts"].len(), "each bidder once");
    assert_eq!(
        firsts.keys().copied().collect::<Vec<_>>(),
        first_bid.keys().copied().collect::<Vec<_>>()
    );
    for (bidder, at) in &firsts {
        let ms = datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(at)
            .unwrap()
            / 1_000_000;
        assert_eq!(ms, first_bid[bidder], "bidder {bidder}'s first bid");
    }
    // The file's windows: 1000 clicks per second, 100 per key.
    let clicks: Vec<(i64, i64)> = reference["click_windows"]
        .iter()
        .map(|row| (int(row, "k"), int(row, "n")))
        .collect();
    assert_eq!(clicks.len() as i64, CLICKS / 1000 * CLICK_KEYS);
    assert!(clicks.iter().all(|&(_, n)| n == 100), "{clicks:?}");
}

#[test]
fn killed_and_restarted_jobs_commit_exactly_the_uninterrupted_output() {
    let root = tempfile::tempdir().unwrap();
    let clicks = root.path().join("clicks.json");
    write_clicks(&clicks);
    let reference = {
        let dir = root.path().join("reference");
        let sql_file = root.path().join("reference.sql");
        std::fs::write(&sql_file, sql(&dir, &clicks)).unwrap();
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

    check_new_sinks(&reference, &generator);

    let seed = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("crash test seed {seed} (EDDY_CRASH_SEED={seed} repeats these kills)");
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut checkpoint_crashes = 0;
    let mut stops = 0;
    for iteration in 0..ITERATIONS {
        let dir = root.path().join(format!("run-{iteration}"));
        let sql_file = root.path().join(format!("run-{iteration}.sql"));
        std::fs::write(&sql_file, sql(&dir, &clicks)).unwrap();
        let state = dir.join("state");
        let mut rescaled = false;
        let mut parallelism = 1;
        for attempt in 0.. {
            assert!(attempt < 40, "iteration {iteration} never finished");
            // Every other iteration restarts at another parallelism: 1,
            // then 4, then 2 (key groups and splits move in both
            // directions), then at random.
            if iteration % 2 == 1 {
                parallelism = match attempt {
                    0 => 1,
                    1 => 4,
                    2 => 2,
                    _ => [1, 2, 4][rng.below(3) as usize],
                };
                rescaled |= parallelism != 1;
            }
            // Some runs die inside a checkpoint, at a fixed point.
            let crash_at = match (attempt, iteration % 5) {
                (0, 1) => Some("state-written"),
                (0, 2) => Some("manifest-written"),
                _ => None,
            };
            // Killed after 1 to 4 checkpoints of its own; from the sixth
            // attempt on, runs are left to finish.
            let signal = if rng.below(4) == 0 {
                Signal::Term
            } else {
                Signal::Kill
            };
            let kill = (crash_at.is_none() && attempt < 6).then(|| (1 + rng.below(4), signal));
            match run(&sql_file, &state, parallelism, kill, crash_at) {
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
        for sink in ["joined", "firsts", "click_windows"] {
            assert_same(
                &net(&got[sink]),
                &net(&reference[sink]),
                &format!("{sink}, {context}"),
            );
        }
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
