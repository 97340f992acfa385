//! `eddy server`'s Postgres port through real clients: psql (DDL, jobs,
//! queries over views, `\d`), tokio-postgres (the extended protocol with
//! binary results and parameters, SQLSTATEs, `SUBSCRIBE`), psycopg (a
//! transaction, server-side prepared statements), and the password a token
//! asks for.

#![allow(clippy::unwrap_used)]

mod common;

use common::server::Server;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// ids 1..=n, and a view of their count and sum per `id % 3`.
const DDL: &str = "CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen',
       'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '900');
     CREATE MATERIALIZED VIEW counts AS
       SELECT id % 3 AS k, COUNT(*) AS n, SUM(id) AS s FROM ids GROUP BY id % 3;";

/// The view's rows for ids 1..=900, by hand: (k, count, sum).
fn expected() -> Vec<(i64, i64, i64)> {
    (0..3)
        .map(|k| {
            let ids: Vec<i64> = (1..=900).filter(|i| i % 3 == k).collect();
            (k, ids.len() as i64, ids.iter().sum())
        })
        .collect()
}

/// Waits until the view holds the whole answer (its job is bounded).
fn wait_for_view(server: &Server) {
    let total: i64 = expected().iter().map(|r| r.1).sum();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (code, out, _) = server.psql(None, &["-At", "-c", "SELECT sum(n) FROM counts"]);
        if code == 0 && out.trim() == total.to_string() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the view never filled: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn psql_runs_ddl_starts_jobs_and_reads_views_and_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Any user and database name on loopback.
    let (code, out, err) = server.psql(None, &["-U", "someone", "-d", "anything", "-c", DDL]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("NOTICE:  started job"), "{err}");
    wait_for_view(&server);

    let (code, out, err) = server.psql(
        None,
        &[
            "-At",
            "-F",
            ",",
            "-c",
            "SELECT k, n, s FROM counts ORDER BY k",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let rows: Vec<(i64, i64, i64)> = out
        .lines()
        .map(|l| {
            let v: Vec<i64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    assert_eq!(rows, expected());

    // `\d` lists the relations and `\d counts` its columns, through
    // psql's own queries of pg_catalog.
    let (code, out, err) = server.psql(None, &["-c", "\\d"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.contains(" public "))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        listed,
        vec![
            vec!["public", "counts", "materialized view", "eddy"],
            vec!["public", "ids", "table", "eddy"],
        ],
        "{out}"
    );
    let (code, out, err) = server.psql(None, &["-c", "\\d counts"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Materialized view \"public.counts\""), "{out}");
    let columns: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.matches('|').count() == 4 && !l.contains("Column"))
        .map(|l| l.split('|').map(str::trim).take(2).collect())
        .collect();
    assert_eq!(
        columns,
        vec![
            vec!["k", "bigint"],
            vec!["n", "bigint"],
            vec!["s", "bigint"]
        ],
        "{out}"
    );
    // information_schema, as drivers and Grafana read it.
    let (code, out, err) = server.psql(
        None,
        &[
            "-At",
            "-c",
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'ids' ORDER BY ordinal_position",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "id|bigint");

    // `COPY (SUBSCRIBE v) TO STDOUT`: psql prints the rows as they come
    // (line-buffered here as on a terminal), while the subscription stays
    // open.
    let (host, port) = server.pg.rsplit_once(':').unwrap();
    let mut copy = std::process::Command::new("stdbuf")
        .args([
            "-oL", "psql", "-h", host, "-p", port, "-U", "eddy", "-X", "-c",
        ])
        .arg("COPY (SUBSCRIBE TO counts) TO STDOUT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = copy.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut rows: Vec<(i64, i64, i64)> = Vec::new();
    while rows.len() < 3 {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a row from COPY (SUBSCRIBE ...)");
        let v: Vec<&str> = line.split('\t').collect();
        assert_eq!(v[0], "+I", "{line}");
        rows.push((
            v[2].parse().unwrap(),
            v[3].parse().unwrap(),
            v[4].parse().unwrap(),
        ));
    }
    // Ctrl-C: psql sends a cancel request, and the subscription ends.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &copy.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = copy.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    rows.sort();
    assert_eq!(rows, expected());

    // Errors carry their SQLSTATE and position.
    let cases = [
        ("SELECT * FROM countz", "42P01", "countz"),
        ("SELECT nope FROM counts", "42703", "nope"),
        ("SELEC 1", "42601", "SELEC"),
        ("SELECT idd FROM ids", "42703", "idd"),
    ];
    for (sql, code, at) in cases {
        let (status, _, err) = server.psql(None, &["-v", "VERBOSITY=verbose", "-c", sql]);
        assert_ne!(status, 0);
        assert!(err.contains(&format!("ERROR:  {code}:")), "{sql}: {err}");
        // psql marks the position under the statement's line.
        let line = err.lines().find(|l| l.starts_with("LINE 1: ")).unwrap();
        let caret = err
            .lines()
            .skip_while(|l| !l.starts_with("LINE 1: "))
            .nth(1)
            .unwrap();
        let column = caret.find('^').unwrap();
        assert_eq!(&line[column..column + at.len()], at, "{sql}: {err}");
    }
}

#[test]
fn tokio_postgres_reads_a_view_with_prepared_statements_binary_rows_and_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (code, _, err) = server.psql(None, &["-c", DDL]);
    assert_eq!(code, 0, "{err}");
    wait_for_view(&server);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (host, port) = server.pg.rsplit_once(':').unwrap();
        let config = format!("host={host} port={port} user=eddy dbname=eddy");
        let (client, connection) = tokio_postgres::connect(&config, NoTls).await.unwrap();
        tokio::spawn(connection);

        // The extended protocol: a prepared statement with a parameter,
        // rows in the binary format.
        let statement = client
            .prepare("SELECT k, n, s FROM counts WHERE k >= $1 ORDER BY k")
            .await
            .unwrap();
        assert_eq!(statement.params(), &[tokio_postgres::types::Type::INT8]);
        let rows = client.query(&statement, &[&1i64]).await.unwrap();
        let got: Vec<(i64, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(got, expected()[1..].to_vec());

        // Typed values of other kinds, in the binary format.
        let row = client
            .query_one(
                "SELECT CAST(1.5 AS DOUBLE) AS d, 'x' AS t, true AS b, \
                 CAST('2024-01-02 03:04:05' AS TIMESTAMP) AS ts",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, f64>("d"), 1.5);
        assert_eq!(row.get::<_, String>("t"), "x");
        assert!(row.get::<_, bool>("b"));
        let ts = chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        assert_eq!(row.get::<_, chrono::NaiveDateTime>("ts"), ts);

        // Unnamed columns are named as Postgres names them.
        let row = client
            .query_one(
                "SELECT count(*), sum(n) + 0, max(k) AS top FROM counts",
                &[],
            )
            .await
            .unwrap();
        let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["count", "?column?", "top"]);
        assert_eq!(row.get::<_, i64>(0), 3);
        assert_eq!(row.get::<_, i64>(1), 900);

        // SQLSTATEs through the driver.
        let cases = [
            ("SELECT * FROM countz", SqlState::UNDEFINED_TABLE),
            ("SELECT nope FROM counts", SqlState::UNDEFINED_COLUMN),
            ("SELEC 1", SqlState::SYNTAX_ERROR),
        ];
        for (sql, state) in cases {
            let e = client.query(sql, &[]).await.unwrap_err();
            assert_eq!(e.code(), Some(&state), "{sql}: {e}");
            let e = client.simple_query(sql).await.unwrap_err();
            assert_eq!(e.code(), Some(&state), "{sql}: {e}");
        }

        // SUBSCRIBE: the rows as +I first, with their event ids.
        let messages = client
            .simple_query_raw("SUBSCRIBE TO counts")
            .await
            .unwrap();
        futures::pin_mut!(messages);
        let mut rows = Vec::new();
        while rows.len() < 3 {
            use futures::StreamExt;
            match messages.next().await.unwrap().unwrap() {
                SimpleQueryMessage::Row(r) => {
                    assert_eq!(r.get("op"), Some("+I"));
                    assert!(r.get("event_id").is_some());
                    let v = |c: &str| r.get(c).unwrap().parse::<i64>().unwrap();
                    rows.push((v("k"), v("n"), v("s")));
                }
                _ => continue,
            }
        }
        rows.sort();
        assert_eq!(rows, expected());
    });
}

/// psycopg 3 (Debian's python3-psycopg), as a Python client uses it: a
/// transaction opened for it, parameters bound by the server, statements
/// prepared on the server after their fifth run, binary rows on request.
const PSYCOPG: &str = r#"
import json, sys, psycopg
rows = {}
with psycopg.connect(sys.argv[1]) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT k, n, s FROM counts WHERE k >= %s ORDER BY k", (0,))
        rows["text"] = cur.fetchall()
        rows["prepared"] = []
        for i in range(8):
            cur.execute("SELECT n, s FROM counts WHERE k = %s", (i % 3,), prepare=i > 4)
            rows["prepared"].append(list(cur.fetchone()))
        cur.execute("SELECT k, n, s FROM counts ORDER BY k", binary=True)
        rows["binary"] = cur.fetchall()
        try:
            cur.execute("SELECT * FROM nope")
        except psycopg.Error as e:
            rows["error"] = e.sqlstate
print(json.dumps(rows))
"#;

#[test]
fn psycopg_reads_a_view_with_bound_prepared_and_binary_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (code, _, err) = server.psql(None, &["-c", DDL]);
    assert_eq!(code, 0, "{err}");
    wait_for_view(&server);
    let (host, port) = server.pg.rsplit_once(':').unwrap();
    // Debian's Python, which has python3-psycopg (a pyenv one may not).
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PSYCOPG])
        .arg(format!("host={host} port={port} user=eddy dbname=eddy"))
        .output()
        .expect("python3 with psycopg (Debian's python3-psycopg)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = expected();
    let triples = |v: &serde_json::Value| -> Vec<(i64, i64, i64)> {
        let rows = v.as_array().unwrap();
        let cell = |r: &serde_json::Value, i: usize| r[i].as_i64().unwrap();
        rows.iter()
            .map(|r| (cell(r, 0), cell(r, 1), cell(r, 2)))
            .collect()
    };
    assert_eq!(triples(&got["text"]), expected);
    assert_eq!(triples(&got["binary"]), expected);
    let prepared: Vec<(i64, i64)> = (0..8)
        .map(|i| {
            let r = &got["prepared"][i];
            (r[0].as_i64().unwrap(), r[1].as_i64().unwrap())
        })
        .collect();
    let want: Vec<(i64, i64)> = (0..8)
        .map(|i| (expected[i % 3].1, expected[i % 3].2))
        .collect();
    assert_eq!(prepared, want);
    assert_eq!(got["error"], "42P01");
}

#[test]
fn the_postgres_port_takes_the_token_as_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--auth-token", "s3cret"]);
    let (code, _, err) = server.psql(Some("wrong"), &["-c", "SELECT 1"]);
    assert_ne!(code, 0);
    assert!(
        err.to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    let (code, out, err) = server.psql(Some("s3cret"), &["-At", "-c", "SELECT 1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");

    // Any address but loopback needs a token, the Postgres port's too.
    let args = ["--listen", "127.0.0.1:0", "--pg-listen", "0.0.0.0:0"];
    Server::assert_needs_a_token(dir.path(), &args);
}
