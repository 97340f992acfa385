//! The `eddy` command's behaviour as a user sees it: exit codes and the
//! rendering of errors.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn eddy_run(dir: &Path, sql: &str) -> Output {
    let path = dir.join("q.sql");
    std::fs::write(&path, sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir)
        .args(["run", "q.sql"])
        .output()
        .unwrap()
}

/// `eddy run q.sql` in `dir`, left running: its state in `state`, a
/// checkpoint every `interval`, its stderr to `stderr`.
fn eddy_run_in_background(dir: &Path, state: &str, interval: &str, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir)
        .args(["run", "q.sql", "--state-dir", state])
        .args(["--checkpoint-interval", interval])
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to process `pid`.
fn term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SOURCE: &str = "CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3))
  WITH (connector = 'file', path = 'bids.json', format = 'json');\n";

#[test]
fn a_materialized_view_is_refused_outside_the_server_at_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!("{SOURCE}CREATE MATERIALIZED VIEW v AS SELECT auction FROM bids;\n");
    let out = eddy_run(dir.path(), &sql);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("kept by `eddy server`"), "{err}");
    assert!(err.contains("q.sql:3:26"), "{err}");
}

#[test]
fn a_syntax_error_shows_line_column_and_caret_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy_run(
        dir.path(),
        "CREATE SINK s WITH (connector = 'file', path = 'out.json') AS\nSELECT auction,\n  price * FROM bids;\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: expected expression, found 'FROM'\n --> q.sql:3:11\n  |\n3 |   price * FROM bids;\n  |           ^^^^\n"
    );
    assert!(
        !dir.path().join("out.json").exists(),
        "nothing may run after a syntax error"
    );
}

#[test]
fn an_unknown_column_lists_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bids.json"), "").unwrap();
    let out = eddy_run(
        dir.path(),
        &format!("{SOURCE}SELECT auction, pricee FROM bids;\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: unknown column 'pricee' (did you mean 'price'?); 'bids' has columns: auction, price, date_time\n \
         --> q.sql:3:17\n  |\n3 | SELECT auction, pricee FROM bids;\n  |                 ^^^^^^\n"
    );
}

#[test]
fn an_unknown_table_is_reported_with_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bids.json"), "").unwrap();
    let out = eddy_run(dir.path(), &format!("{SOURCE}SELECT auction FROM bid;\n"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: unknown table 'bid' (did you mean 'bids'?); tables: bids\n --> q.sql:3:21\n"
        ),
        "{err}"
    );
}

#[test]
fn a_malformed_input_line_stops_the_job_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bids.json"),
        "{\"auction\": 1, \"price\": 10, \"date_time\": \"2024-01-01T00:00:00Z\"}\n\
         {\"auction\": 2, \"price\": 20, \"date_time\": \"2024-01-01T00:00:01Z\"}\n\
         {\"auction\": 3, \"price\": \"cheap\", \"date_time\": \"2024-01-01T00:00:02Z\"}\n",
    )
    .unwrap();
    let out = eddy_run(
        dir.path(),
        &format!("{SOURCE}SELECT auction, price FROM bids;\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("malformed record in bids.json at line 3:"),
        "{err}"
    );
    assert!(
        err.contains("cheap"),
        "the reason should quote the bad value: {err}"
    );
}

#[test]
fn explain_prints_the_dataflow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bids.json"), "").unwrap();
    let sql = "CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
      WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
      WITH (connector = 'file', path = 'bids.json', format = 'json');
    EXPLAIN SELECT auction, window_start, COUNT(*) AS n
    FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end;";
    let path = dir.path().join("q.sql");
    std::fs::write(&path, sql).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir.path())
        .args(["run", "q.sql", "--parallelism", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("TumblingWindowAggregate size=10s"), "{text}");
    assert!(text.contains("shuffle by hash(auction)"), "{text}");
    assert!(text.contains("(parallelism 3)"), "{text}");
    assert!(text.contains("gather"), "{text}");
}

#[test]
fn insert_into_a_declared_sink_writes_its_columns_and_types() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bids.json"),
        "{\"auction\": 7, \"price\": 250, \"date_time\": \"2024-01-01T00:00:00.250Z\"}\n\
         {\"auction\": 8, \"price\": null, \"date_time\": 1704067201000}\n",
    )
    .unwrap();
    let out = eddy_run(
        dir.path(),
        &format!(
            "{SOURCE}CREATE SINK dollars (item VARCHAR, usd DOUBLE, at TIMESTAMP(3))
               WITH (connector = 'file', path = 'out/dollars.jsonl', format = 'json');
             INSERT INTO dollars SELECT auction, price / 100.0, date_time FROM bids;\n"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("out/dollars.jsonl")).unwrap();
    assert_eq!(
        text,
        "{\"item\":\"7\",\"usd\":2.5,\"at\":\"2024-01-01T00:00:00.250Z\"}\n\
         {\"item\":\"8\",\"usd\":null,\"at\":\"2024-01-01T00:00:01Z\"}\n"
    );
}

#[test]
fn every_error_of_a_file_is_reported_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bids.json"), "").unwrap();
    let sql = format!(
        "{SOURCE}SELECT auction FROM bids WHERE;\n\
         SELECT nope FROM bids;\n\
         CREATE SINK s WITH (connector = 'file', path = 'out.json') AS SELECT price FROM bids;\n\
         SELECT price FROM bids GROUP BY price HAVING auction > 1;\n"
    );
    let out = eddy_run(dir.path(), &sql);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let locations: Vec<&str> = err.lines().filter(|l| l.contains("--> q.sql:")).collect();
    assert_eq!(
        locations,
        vec![" --> q.sql:3:31", " --> q.sql:4:8", " --> q.sql:6:46"],
        "{err}"
    );
    assert!(err.contains("3 errors; nothing was run"), "{err}");
    assert!(
        !dir.path().join("out.json").exists(),
        "the valid sink must not run either"
    );
}

#[test]
fn an_updating_aggregate_writes_its_changelog_with_an_op_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clicks.json"),
        "{\"user\": \"a\", \"ms\": 5}\n{\"user\": \"b\", \"ms\": 7}\n{\"user\": \"a\", \"ms\": 2}\n",
    )
    .unwrap();
    let sql = "CREATE SOURCE c (user VARCHAR, ms BIGINT)
          WITH (connector = 'file', path = 'clicks.json', format = 'json', 'batch.size' = '1');
        CREATE SINK s WITH (connector = 'file', path = 'out.jsonl') AS
        SELECT user, COUNT(*) AS n, SUM(ms) AS total FROM c GROUP BY user;\n";
    let path = dir.path().join("q.sql");
    std::fs::write(&path, sql).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir.path())
        .args(["run", "q.sql", "--parallelism", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    // Keys may interleave across subtasks; each key's changes keep their order.
    let of = |user: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains(&format!("\"user\":\"{user}\"")))
            .collect()
    };
    assert_eq!(
        of("a"),
        vec![
            "{\"user\":\"a\",\"n\":1,\"total\":5,\"op\":\"+I\"}",
            "{\"user\":\"a\",\"n\":1,\"total\":5,\"op\":\"-U\"}",
            "{\"user\":\"a\",\"n\":2,\"total\":7,\"op\":\"+U\"}",
        ]
    );
    assert_eq!(
        of("b"),
        vec!["{\"user\":\"b\",\"n\":1,\"total\":7,\"op\":\"+I\"}"]
    );
}

#[test]
fn late_rows_go_to_the_dead_letter_sink_with_the_reason_and_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // One row per batch. The second row moves the watermark (5 s behind)
    // to 12:00:10, which fires [12:00:00, 12:00:10); the third row belongs
    // only to that window, so it is late.
    std::fs::write(
        dir.path().join("bids.json"),
        "{\"auction\": 1, \"price\": 10, \"date_time\": \"2024-05-01T12:00:01Z\"}\n\
         {\"auction\": 1, \"price\": 20, \"date_time\": \"2024-05-01T12:00:15Z\"}\n\
         {\"auction\": 2, \"price\": 30, \"date_time\": \"2024-05-01T12:00:02Z\"}\n",
    )
    .unwrap();
    let out = eddy_run(
        dir.path(),
        "CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
           WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND)
           WITH (connector = 'file', path = 'bids.json', format = 'json', 'batch.size' = '1');
         CREATE SINK late_bids WITH (connector = 'file', path = 'late.jsonl', format = 'json');
         SET 'late.policy' = 'dead-letter';
         SET 'late.dead-letter-sink' = 'late_bids';
         CREATE SINK counts WITH (connector = 'file', path = 'counts.jsonl') AS
         SELECT auction, window_start, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
         GROUP BY auction, window_start, window_end;",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let late = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert_eq!(
        late,
        "{\"auction\":2,\"price\":30,\"date_time\":\"2024-05-01T12:00:02Z\",\
         \"_reason\":\"late: every window of the row had fired\",\
         \"_watermark\":\"2024-05-01T12:00:10Z\"}\n"
    );
    let mut counts: Vec<String> = std::fs::read_to_string(dir.path().join("counts.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            "{\"auction\":1,\"window_start\":\"2024-05-01T12:00:00Z\",\"n\":1}",
            "{\"auction\":1,\"window_start\":\"2024-05-01T12:00:10Z\",\"n\":1}",
        ]
    );
    assert!(
        stderr(&out).contains("1 late rows"),
        "the late row is reported: {}",
        stderr(&out)
    );
}

#[test]
fn a_dead_letter_policy_needs_a_declared_sink() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy_run(dir.path(), "SET 'late.dead-letter-sink' = 'nowhere';\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(
            "error: unknown sink 'nowhere': declare it first with CREATE SINK nowhere WITH (...)\n --> q.sql:1:31"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_file_of_a_directory_source_is_a_partition_with_its_own_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let bids = dir.path().join("bids");
    std::fs::create_dir(&bids).unwrap();
    let line = |auction: i64, secs: f64| {
        format!(
            "{{\"auction\": {auction}, \"price\": 1, \"date_time\": {}}}\n",
            1_714_564_800_000 + (secs * 1000.0) as i64
        )
    };
    // Partition a runs ahead of partition b. Read in turn (a 1 s, b 0.5 s,
    // a 11 s, b 2 s, ...), a single watermark would pass 10 s after a's
    // second row and make b's rows at 2, 3 and 4 s late. Per partition,
    // b holds the watermark back until it ends.
    let a: String = [1.0, 11.0, 21.0, 31.0].map(|s| line(1, s)).concat();
    let b: String = [0.5, 2.0, 3.0, 4.0].map(|s| line(2, s)).concat();
    std::fs::write(bids.join("a.json"), a).unwrap();
    std::fs::write(bids.join("b.json"), b).unwrap();
    let out = eddy_run(
        dir.path(),
        "CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
           WATERMARK FOR date_time AS date_time)
           WITH (connector = 'file', path = 'bids', format = 'json', 'batch.size' = '1');
         CREATE SINK counts WITH (connector = 'file', path = 'counts.jsonl') AS
         SELECT window_start, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end;",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("late"), "{}", stderr(&out));
    let counts = std::fs::read_to_string(dir.path().join("counts.jsonl")).unwrap();
    assert_eq!(
        counts,
        "{\"window_start\":\"2024-05-01T12:00:00Z\",\"n\":5}\n\
         {\"window_start\":\"2024-05-01T12:00:10Z\",\"n\":1}\n\
         {\"window_start\":\"2024-05-01T12:00:20Z\",\"n\":1}\n\
         {\"window_start\":\"2024-05-01T12:00:30Z\",\"n\":1}\n"
    );
}

#[test]
fn processing_time_windows_count_every_row_in_wall_clock_windows() {
    // PROCTIME() stamps rows with the time they are processed; a window
    // over it groups by wall-clock time. Which window a row lands in is not
    // known beforehand, so the test checks what must hold whatever the
    // clock said: every row is counted once, in 10-second windows aligned
    // to the epoch that lie within the run.
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for i in 0..50 {
        rows += &format!(
            "{{\"auction\": {}, \"price\": {i}, \"date_time\": 1704067200000}}\n",
            i % 3
        );
    }
    std::fs::write(dir.path().join("bids.json"), rows).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now();
    let out = eddy_run(
        dir.path(),
        &(SOURCE.replace("format = 'json'", "format = 'json', 'batch.size' = '7'")
            + "CREATE SINK counts WITH (connector = 'file', path = 'counts.jsonl') AS
               WITH b AS (SELECT *, PROCTIME() AS p_time FROM bids)
               SELECT auction, COUNT(*) AS n, window_start, window_end
               FROM TABLE(TUMBLE(TABLE b, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
               GROUP BY auction, window_start, window_end;\n"),
    );
    let after = now();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("counts.jsonl")).unwrap();
    let mut per_auction = [0i64; 3];
    let parse = |v: &serde_json::Value| {
        datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(
            v.as_str().unwrap(),
        )
        .unwrap()
            / 1_000_000
    };
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (start, end) = (parse(&v["window_start"]), parse(&v["window_end"]));
        assert_eq!(end - start, 10_000, "{line}");
        assert_eq!(start % 10_000, 0, "{line}");
        assert!(start <= after && end > before, "{line} outside the run");
        per_auction[v["auction"].as_i64().unwrap() as usize] += v["n"].as_i64().unwrap();
    }
    assert_eq!(per_auction, [17, 17, 16], "{text}");
}

/// `eddy run` of `sql` (as `q.sql` in `dir`) at parallelism 1, with its
/// state in `dir/state`.
fn run_with_state(dir: &Path, sql: &str) -> std::process::Output {
    std::fs::write(dir.join("q.sql"), sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir)
        .args(["run", "--state-dir", "state", "-p", "1", "q.sql"])
        .output()
        .unwrap()
}

#[test]
fn a_state_directory_is_not_resumed_by_a_changed_query() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bids.json"),
        "{\"auction\": 1, \"price\": 5, \"date_time\": \"2025-01-01T00:00:01\"}\n",
    )
    .unwrap();
    let run = |select: &str| {
        let sql = format!(
            "{SOURCE}CREATE SINK out WITH (connector = 'file', path = 'out/') AS {select};"
        );
        run_with_state(dir.path(), &sql)
    };
    let original = "SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction";
    let first = run(original);
    assert!(first.status.success(), "{}", stderr(&first));
    // Another aggregate over the same sink: its state would be misread.
    let changed = run("SELECT auction, SUM(price) AS n FROM bids GROUP BY auction");
    assert!(!changed.status.success());
    let message = stderr(&changed);
    assert!(
        message.contains("is not the job that wrote checkpoint")
            && message.contains("plan changed"),
        "{message}"
    );
    // The original query is recognised (and had finished).
    let again = run(original);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already finished"),
        "{}",
        stderr(&again)
    );
}

/// A resumed job may change its state time-to-live, but not the clock it
/// is measured on: the keys' stored times are on the other one.
#[test]
fn a_resumed_job_may_change_its_state_ttl_but_not_its_time_domain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bids.json"),
        "{\"auction\": 1, \"price\": 5, \"date_time\": \"2025-01-01T00:00:01\"}\n",
    )
    .unwrap();
    let run = |settings: &str| {
        let sql = format!(
            "{settings}
             CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
               WATERMARK FOR date_time AS date_time)
             WITH (connector = 'file', path = 'bids.json', format = 'json');
             CREATE SINK out WITH (connector = 'file', path = 'out/') AS
             SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction;"
        );
        run_with_state(dir.path(), &sql)
    };
    let first = run("SET 'state.ttl' = '1 h';");
    assert!(first.status.success(), "{}", stderr(&first));
    let longer = run("SET 'state.ttl' = '2 h';");
    assert!(
        stderr(&longer).contains("already finished"),
        "{}",
        stderr(&longer)
    );
    let event_time = run("SET 'state.ttl' = '1 h'; SET 'state.ttl.time-domain' = 'event-time';");
    assert!(!event_time.status.success());
    assert!(
        stderr(&event_time).contains("plan changed"),
        "{}",
        stderr(&event_time)
    );
}

#[test]
fn a_mistyped_option_is_shown_at_its_key_with_the_declared_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy_run(
        dir.path(),
        "CREATE SOURCE bids (auction BIGINT)\n  WITH (connector = 'nexmark', tabel = 'bid');\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: unknown option 'tabel' for connector 'nexmark' (did you mean 'table'?)\n --> q.sql:2:32\n  |\n2 |   WITH (connector = 'nexmark', tabel = 'bid');\n  |                                ^^^^^\n"
    );
}

#[test]
fn show_connectors_and_describe_connector_come_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy_run(dir.path(), "SHOW CONNECTORS;\nDESCRIBE CONNECTOR file;\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for connector in ["nexmark", "file", "stdout", "blackhole"] {
        assert!(
            text.lines().any(|l| l.starts_with(connector)),
            "SHOW CONNECTORS lists {connector}: {text}"
        );
    }
    // The file connector's options, its format's, with types and defaults.
    let path = text
        .lines()
        .find(|l| l.starts_with("path "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(path.contains("string") && path.contains("yes"), "{path}");
    let split = text
        .lines()
        .find(|l| l.starts_with("source.split-size"))
        .unwrap();
    assert!(
        split.contains("'32 mb'") && split.contains("source"),
        "{split}"
    );
    assert!(text.contains("json.ignore-parse-errors"), "{text}");
    assert!(text.contains("csv.field-delimiter"), "{text}");
    let out = eddy_run(dir.path(), "DESCRIBE CONNECTOR fiel;\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: unknown connector 'fiel' (did you mean 'file'?)"),
        "{}",
        stderr(&out)
    );
}

/// A job over a watched directory never ends by itself: a SIGTERM stops it
/// after a checkpoint; a second one ends the process at once.
#[test]
fn a_second_sigterm_ends_the_process_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{\"k\": 1}\n").unwrap();
    let sql = "CREATE SOURCE s (k BIGINT) WITH (connector = 'file', path = 'in',
                 'source.monitor-interval' = '100 ms');
               CREATE SINK out WITH (connector = 'file', path = 'out/') AS SELECT k FROM s;\n";
    std::fs::write(dir.path().join("q.sql"), sql).unwrap();
    // Once: a clean stop after a checkpoint, exit status 0.
    let mut child = eddy_run_in_background(dir.path(), "state", "50ms", Stdio::piped());
    // The first row is committed by a checkpoint: the job is running and
    // eddy's handler is in place.
    while !dir.path().join("out").exists()
        || std::fs::read_dir(dir.path().join("out")).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-")
        })
    {
        assert!(child.try_wait().unwrap().is_none(), "eddy ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    term(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped after a final checkpoint"));
    // Twice: the second ends the process without waiting. (The second is
    // sent once the first was handled: two signals sent at once may reach
    // a process as one.)
    let log = dir.path().join("stderr.txt");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = eddy_run_in_background(dir.path(), "state2", "1h", log_file.into());
    // The job's state directory records it once eddy's handler is in place.
    while !dir.path().join("state2/job1-out/job.json").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    term(child.id());
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("stopping after a checkpoint")
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    term(child.id());
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    // The first may have finished its stop before the second came: then
    // the run ended cleanly; otherwise the second ended it at once.
    match status.code() {
        Some(130) => assert!(
            text.contains("stopping now, without a checkpoint"),
            "{text}"
        ),
        Some(0) => assert!(text.contains("stopped after a final checkpoint"), "{text}"),
        other => panic!("exit {other:?}: {text}"),
    }
}

/// Replay, then follow: a watched directory's files are read, then lines
/// appended to them (one written in two pieces) and a new file are read as
/// they come, each exactly once, across a stop after a checkpoint.
#[test]
fn a_watched_directory_is_replayed_then_followed_without_gap_or_duplicate() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let lines =
        |ks: std::ops::Range<i64>| -> String { ks.map(|k| format!("{{\"k\": {k}}}\n")).collect() };
    let history = dir.path().join("in/a.json");
    std::fs::write(&history, lines(0..1000)).unwrap();
    let sql = "CREATE SOURCE s (k BIGINT) WITH (connector = 'file', path = 'in',
                 'source.monitor-interval' = '50 ms');
               CREATE SINK out WITH (connector = 'file', path = 'out/') AS SELECT k FROM s;\n";
    std::fs::write(dir.path().join("q.sql"), sql).unwrap();
    let child = eddy_run_in_background(dir.path(), "state", "50ms", Stdio::piped());
    // The rows committed so far (part files, not those in progress).
    let committed = || -> Vec<i64> {
        let Ok(entries) = std::fs::read_dir(dir.path().join("out")) else {
            return Vec::new();
        };
        let mut ks = Vec::new();
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with("part-") || name.ends_with(".inprogress") {
                continue;
            }
            let text = std::fs::read_to_string(dir.path().join("out").join(&name)).unwrap();
            for line in text.lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                ks.push(row["k"].as_i64().unwrap());
            }
        }
        ks.sort_unstable();
        ks
    };
    let wait_for = |n: usize| {
        for _ in 0..1500 {
            if committed().len() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("only {} rows of {n} were committed", committed().len());
    };
    wait_for(1000);
    // Appended lines, the last one written in two pieces.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .unwrap();
    file.write_all(lines(1000..1500).as_bytes()).unwrap();
    file.write_all(b"{\"k\": 15").unwrap();
    file.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    file.write_all(b"00}\n").unwrap();
    // A new file.
    std::fs::write(dir.path().join("in/b.json"), lines(1501..2000)).unwrap();
    wait_for(2000);
    term(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(committed(), (0..2000).collect::<Vec<i64>>());
}

/// A Flink script as `eddy run` takes it: `print` tables written by two
/// INSERTs, run as one job, each row printed once as Flink prints it.
#[test]
fn a_flink_script_prints_its_inserts_as_flink_does() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE TABLE numbers (n BIGINT, name STRING) WITH (
    'connector' = 'datagen', 'number-of-rows' = '4', 'rows-per-second' = '1000',
    'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '4',
    'fields.name.length' = '3');
CREATE TABLE small (n BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'small');
CREATE TABLE total (total BIGINT) WITH ('connector' = 'print');
INSERT INTO small SELECT n FROM numbers WHERE n <= 2;
INSERT INTO total SELECT SUM(n) FROM numbers;
";
    let out = eddy_run(dir.path(), sql);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut small: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("small> "))
        .collect();
    small.sort_unstable();
    assert_eq!(small, ["small> +I[1]", "small> +I[2]"], "{stdout}");
    // The total of 1..4 ends at 10: inserted once, then each update
    // retracts the value before it (how many depends on the batches).
    let totals: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("small> "))
        .collect();
    let last = totals.last().copied().unwrap_or_default();
    assert!(last == "+I[10]" || last == "+U[10]", "{stdout}");
    assert_eq!(totals.first().map(|l| &l[..2]), Some("+I"), "{stdout}");
    assert_eq!(
        totals.iter().filter(|l| l.starts_with("-U")).count(),
        totals.iter().filter(|l| l.starts_with("+U")).count(),
        "{stdout}"
    );
}

/// Many INSERTs are one job whose state directory is named after it: the
/// name stays short however many tables the script writes.
#[test]
fn a_script_of_many_inserts_runs_as_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut sql = String::from(
        "CREATE TABLE numbers (n BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10',
           'rows-per-second' = '100000', 'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '10');\n",
    );
    for i in 0..30 {
        sql.push_str(&format!(
            "CREATE TABLE a_rather_long_result_table_name_number_{i} (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO a_rather_long_result_table_name_number_{i} SELECT n + {i} FROM numbers;\n"
        ));
    }
    let out = eddy_run(dir.path(), &sql);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `'bad-data'`: malformed lines (not JSON, a type mismatch) fail the job
/// at their line by default, are counted with `drop`, and land in the
/// dead-letter sink, with their line and reason, with `dead-letter`.
#[test]
fn bad_records_fail_drop_or_go_to_the_dead_letter_sink() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"auction": 1, "price": 10}"#,
        r#"{"auction": 2, "price"#,
        r#"{"auction": 3, "price": 30}"#,
        r#"{"auction": 4, "price": "forty"}"#,
        r#"{"auction": 5, "price": 50}"#,
    ];
    std::fs::write(dir.path().join("in.json"), lines.join("\n") + "\n").unwrap();
    let sql = |policy: &str| {
        format!(
            "CREATE SINK dlq WITH (connector = 'file', path = 'dlq.jsonl', format = 'json');
CREATE SOURCE bids (auction BIGINT, price BIGINT)
  WITH (connector = 'file', path = 'in.json', format = 'json'{policy});
CREATE SINK s WITH (connector = 'file', path = 'out.jsonl', format = 'json') AS
SELECT auction, price FROM bids;\n"
        )
    };
    let out = eddy_run(dir.path(), &sql(""));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("in.json at line 2:"),
        "{}",
        stderr(&out)
    );

    let out = eddy_run(dir.path(), &sql(", 'bad-data' = 'drop'"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: 2 bad records were dropped"),
        "{}",
        stderr(&out)
    );
    let auctions = |text: &str| -> Vec<i64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["auction"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(auctions(&read("out.jsonl")), vec![1, 3, 5]);

    let out = eddy_run(
        dir.path(),
        &sql(", 'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'dlq'"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: 2 bad records were sent to the dead-letter sink"),
        "{}",
        stderr(&out)
    );
    assert_eq!(auctions(&read("out.jsonl")), vec![1, 3, 5]);
    let dead: Vec<serde_json::Value> = read("dlq.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (row, (line, text)) in dead.iter().zip([(2, lines[1]), (4, lines[3])]) {
        assert_eq!(row["_record"], text);
        assert_eq!(row["_encoding"], "text");
        assert_eq!(row["_source"], "bids");
        assert_eq!(row["_offset"], line);
        assert!(
            row["_partition"].as_str().unwrap().ends_with("in.json"),
            "{row}"
        );
        assert!(!row["_reason"].as_str().unwrap().is_empty(), "{row}");
    }

    let out = eddy_run(dir.path(), &sql(", 'bad-data' = 'dead-letter'"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("'bad-data' = 'dead-letter' needs 'bad-data.dead-letter-sink'"),
        "{}",
        stderr(&out)
    );
}
