//! `connector = 'postgres'` against a real PostgreSQL server (Debian's
//! package, started per test): appended rows and upserted changelogs
//! compared with answers worked out here; jobs killed with SIGKILL (and
//! once inside a checkpoint, after it is durable and before its commit)
//! and restarted, after which an exactly-once sink holds every row once
//! and an at-least-once one every row at least once; and a server stopped
//! and started again under a running job, which its restart strategy rides
//! out; and a table read as a bounded scan and as a lookup join's table.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Ended;
use common::postgres::Postgres;

fn text(rows: Vec<Vec<Option<String>>>) -> Vec<String> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// ids 1..=500 from datagen: every row appended as it is (a quote and a
/// NULL among them), the count and sum per `id % 7` upserted, and the same
/// kept only while the count is at most 71, so that the keys that reach 72
/// are deleted again.
#[test]
fn rows_are_appended_and_a_changelog_is_upserted_and_deleted_by_its_key() {
    let pg = Postgres::start();
    pg.query(
        "CREATE TABLE copy (id integer, k text, v numeric, ts timestamptz, note text);
         CREATE TABLE counts (k text PRIMARY KEY, n bigint, total bigint);
         CREATE TABLE small (k text PRIMARY KEY, n integer)",
    );
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str, columns: &str| {
        format!(
            "CREATE TABLE {name}_sink ({columns}) WITH ('connector' = 'jdbc',
               'url' = 'jdbc:postgresql://127.0.0.1:{}/postgres?user=postgres', 'table-name' = '{name}',
               'sink.buffer-flush.max-rows' = '64');\n",
            pg.port
        )
    };
    let sql = format!(
        "CREATE TABLE ids (id BIGINT,
           k AS CONCAT('k', CAST(id % 7 AS STRING)),
           note AS CASE WHEN id % 100 = 0 THEN 'it''s {{}}' ELSE CAST(NULL AS STRING) END,
           ts AS TO_TIMESTAMP_LTZ(1704067200000 + id, 3))
         WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
               'fields.id.start' = '1', 'fields.id.end' = '500');
         {}{}{}
         EXECUTE STATEMENT SET BEGIN
         INSERT INTO copy_sink SELECT id, k, id * 3, ts, note FROM ids;
         INSERT INTO counts_sink SELECT k, COUNT(*), SUM(id) FROM ids GROUP BY k;
         INSERT INTO small_sink SELECT k, n FROM (SELECT k, COUNT(*) AS n FROM ids GROUP BY k) WHERE n <= 71;
         END;",
        sink(
            "copy",
            "id BIGINT, k STRING, v BIGINT, ts TIMESTAMP(3), note STRING"
        ),
        sink(
            "counts",
            "k STRING, n BIGINT, total BIGINT, PRIMARY KEY (k) NOT ENFORCED"
        ),
        sink("small", "k STRING, n BIGINT, PRIMARY KEY (k) NOT ENFORCED"),
    );
    common::run_ok(common::eddy_job(&sql, dir.path(), &["--parallelism", "2"]));

    let copy = text(pg.query(
        "SELECT id, k, v, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), note FROM copy ORDER BY id",
    ));
    let want: Vec<String> = (1..=500)
        .map(|id: i64| {
            let note = match id % 100 {
                0 => "it's {}",
                _ => "NULL",
            };
            format!(
                "{id} | k{} | {} | 2024-01-01 00:00:00.{id:03} | {note}",
                id % 7,
                id * 3
            )
        })
        .collect();
    assert_eq!(copy.len(), 500);
    assert_eq!(copy, want);

    let mut per_key: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for id in 1..=500i64 {
        let e = per_key.entry(format!("k{}", id % 7)).or_default();
        *e = (e.0 + 1, e.1 + id);
    }
    let counts = text(pg.query("SELECT k, n, total FROM counts ORDER BY k"));
    let want: Vec<String> = per_key
        .iter()
        .map(|(k, (n, total))| format!("{k} | {n} | {total}"))
        .collect();
    assert_eq!(counts, want);
    let small = text(pg.query("SELECT k, n FROM small ORDER BY k"));
    let want: Vec<String> = per_key
        .iter()
        .filter(|(_, (n, _))| *n <= 71)
        .map(|(k, (n, _))| format!("{k} | {n}"))
        .collect();
    assert!(want.len() >= 2 && want.len() < 7, "{want:?}");
    assert_eq!(small, want);
}

/// Runs `sql` once with its state in `dir/state`; with `crash_at`, eddy
/// kills itself at that point of a checkpoint.
fn run_killed(sql: &str, dir: &Path, kill_after: Option<u64>, crash_at: Option<&str>) -> Ended {
    let (mut cmd, state) = common::eddy_checkpointed(sql, dir, "100ms");
    cmd.env_remove("EDDY_CRASH_AT");
    if let Some(point) = crash_at {
        cmd.env("EDDY_CRASH_AT", point);
    }
    common::run_killed(cmd, &state, kill_after)
}

/// ids 1..=n from datagen at 4 000 a second, appended to `ids`.
fn append_job(pg: &Postgres, n: u64, guarantee: &str, extra: &str) -> String {
    format!(
        "{extra}
         CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '4000',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{n}');
         CREATE TABLE out (id BIGINT, twice BIGINT) WITH ('connector' = 'postgres',
           'url' = '{}', 'table-name' = 'ids', 'sink.delivery-guarantee' = '{guarantee}');
         INSERT INTO out SELECT id, id * 2 FROM gen;",
        pg.url()
    )
}

/// Kills the job over and over until it finishes, and returns how many
/// rows the table holds and how many distinct ids.
fn kill_until_done(guarantee: &str) -> (i64, i64, usize) {
    let pg = Postgres::start();
    pg.query("CREATE TABLE ids (id bigint, twice bigint)");
    let dir = tempfile::tempdir().unwrap();
    let sql = append_job(&pg, 12_000, guarantee, "");
    let mut rng = common::clock_seed();
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 40, "the job did not finish in 40 runs");
        // One run dies inside a checkpoint after every barrier was taken
        // and before it is durable: an at-least-once sink has committed
        // rows the restore reads again, an exactly-once one must roll them
        // back. Another dies after it is durable and before its
        // transactions are committed: recovery must commit them.
        let crash_at = match attempt {
            1 => Some("state-written"),
            2 if guarantee == "exactly-once" => Some("manifest-written"),
            _ => None,
        };
        let random = common::next_random(&mut rng);
        let kill_after = (attempt < 6 && crash_at.is_none()).then_some(2 + random % 6);
        let ended = run_killed(&sql, dir.path(), kill_after, crash_at);
        eprintln!("run {attempt}: kill after {kill_after:?}, crash at {crash_at:?}: {ended:?}");
        match ended {
            Ended::Finished => break,
            Ended::Killed => kills += 1,
        }
    }
    let row = &pg.query(
        "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE twice <> id * 2) FROM ids",
    )[0];
    let number = |i: usize| row[i].as_deref().unwrap().parse::<i64>().unwrap();
    assert_eq!(number(2), 0, "rows written wrong");
    // Nothing is left prepared.
    assert!(pg.query("SELECT gid FROM pg_prepared_xacts").is_empty());
    eprintln!("{} rows, {} distinct ids", number(0), number(1));
    (number(0), number(1), kills)
}

#[test]
fn killed_exactly_once_jobs_insert_every_row_once() {
    let (rows, distinct, kills) = kill_until_done("exactly-once");
    assert!(kills >= 3, "too few kills: {kills}");
    assert_eq!((rows, distinct), (12_000, 12_000));
}

#[test]
fn killed_at_least_once_jobs_lose_no_row() {
    let (rows, distinct, kills) = kill_until_done("at-least-once");
    assert!(kills >= 3, "too few kills: {kills}");
    assert_eq!(distinct, 12_000);
    assert!(rows >= 12_000);
}

/// The server goes away for a second while the job writes: the job fails,
/// is restarted with backoff from its last checkpoint until the server
/// is back, and ends with every row once.
#[test]
fn a_server_stopped_and_started_again_is_ridden_out_by_the_restart_strategy() {
    let mut pg = Postgres::start();
    pg.query("CREATE TABLE ids (id bigint, twice bigint)");
    let dir = tempfile::tempdir().unwrap();
    let settings = "SET 'restart-strategy.type' = 'exponential-delay';
         SET 'restart-strategy.exponential-delay.initial-backoff' = '100 ms';
         SET 'restart-strategy.exponential-delay.max-backoff' = '1 s';";
    let sql = append_job(&pg, 16_000, "exactly-once", settings);
    let (mut cmd, _) = common::eddy_checkpointed(&sql, dir.path(), "100ms");
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |pg: &Postgres| -> i64 {
        pg.query("SELECT count(*) FROM ids")[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    while count(&pg) == 0 {
        assert!(Instant::now() < deadline, "no row was committed");
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.stop();
    std::thread::sleep(Duration::from_secs(1));
    pg.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy failed: {stderr}");
    assert!(stderr.contains("restart"), "no restart: {stderr}");
    let row = &pg.query("SELECT count(*), count(DISTINCT id) FROM ids")[0];
    assert_eq!(row[0].as_deref(), Some("16000"));
    assert_eq!(row[1].as_deref(), Some("16000"));
}

/// A table read two ways: scanned whole (the count per tier, upserted into
/// another table) and as a lookup join's table (each order with its
/// customer's name and tier), both equal to what the test computes.
#[test]
fn a_table_is_scanned_and_joined_by_lookup() {
    let pg = Postgres::start();
    let mut setup = String::from(
        "CREATE TABLE customers (id integer PRIMARY KEY, name text, tier text, since timestamptz);
         CREATE TABLE per_tier (tier text PRIMARY KEY, n bigint);
         CREATE TABLE enriched (order_id bigint, name text, tier text);",
    );
    for id in 0..40 {
        let tier = ["gold", "silver", "bronze"][id % 3];
        setup += &format!(
            "INSERT INTO customers VALUES ({id}, 'c''{id}', '{tier}', '2024-01-01 00:00:{:02}+00');",
            id % 60
        );
    }
    pg.query(&setup);
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let sql = format!(
        "CREATE TABLE customers (id INT, name STRING, tier STRING, since TIMESTAMP(3))
           WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'customers',
                 'scan.fetch-size' = '7');
         CREATE TABLE per_tier (tier STRING, n BIGINT, PRIMARY KEY (tier) NOT ENFORCED)
           WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'per_tier');
         CREATE TABLE orders (order_id BIGINT, pt AS PROCTIME())
           WITH ('connector' = 'datagen', 'fields.order_id.kind' = 'sequence',
                 'fields.order_id.start' = '1', 'fields.order_id.end' = '100');
         CREATE TABLE enriched (order_id BIGINT, name STRING, tier STRING)
           WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'enriched');
         EXECUTE STATEMENT SET BEGIN
         INSERT INTO per_tier SELECT tier, COUNT(*) FROM customers WHERE since >= TIMESTAMP '2024-01-01 00:00:05' GROUP BY tier;
         INSERT INTO enriched SELECT o.order_id, c.name, c.tier FROM orders AS o
           JOIN customers FOR SYSTEM_TIME AS OF o.pt AS c ON CAST(o.order_id % 50 AS INT) = c.id;
         END;"
    );
    common::run_ok(common::eddy_job(&sql, dir.path(), &[]));

    let mut per_tier: BTreeMap<&str, i64> = BTreeMap::new();
    for id in 5..40 {
        *per_tier
            .entry(["gold", "silver", "bronze"][id % 3])
            .or_default() += 1;
    }
    let want: Vec<String> = per_tier.iter().map(|(t, n)| format!("{t} | {n}")).collect();
    assert_eq!(
        text(pg.query("SELECT tier, n FROM per_tier ORDER BY tier")),
        want
    );

    let want: Vec<String> = (1..=100)
        .filter(|o| o % 50 < 40)
        .map(|o| {
            let id = (o % 50) as usize;
            format!("{o} | c'{id} | {}", ["gold", "silver", "bronze"][id % 3])
        })
        .collect();
    assert_eq!(
        text(pg.query("SELECT order_id, name, tier FROM enriched ORDER BY order_id")),
        want
    );
}
