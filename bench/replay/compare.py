#!/usr/bin/env python3
"""Replaying a file: Eddy and DuckDB side by side, in one run, on the same
JSON lines file, with the same query, checking that the answers are equal.

The query is a 10-second tumbling count and maximum price per auction over
Nexmark bids (examples/bench/file-tumble.sql). Eddy writes its windows to
a file; DuckDB computes the same groups with `time_bucket`. Each engine is
timed by the wall clock and by the CPU time (user + system): Eddy as its
whole `eddy run` process, DuckDB around its query alone (in a Python
process of its own, without Python's start and import). Prints a Markdown table and each engine's answer checksum.

    bench/replay/compare.py [--eddy PATH] [--input out/bids-2m.json]
                            [--runs 5] [--threads 2] [--format json|parquet]
                            [--flink-python ~/.cache/eddy-bench/pyflink/bin/python]

Needs a release build of eddy and `pip install duckdb`. Writes the input
with eddy (examples/bench/bids-2m-json.sql) when it is missing. With
`--format parquet`, both engines read the same bids as Parquet instead
(written once by eddy from the JSON file, next to it, in row groups of
16 MB: `out/bids-2m.parquet`).

With `--flink-python` (the Python of a venv with `pip install
apache-flink==2.3.0`), Apache Flink runs the same query too, from JSON, in
streaming mode at `--threads` parallelism, into its filesystem sink. Its
wall time includes starting the JVM and submitting the job, and its CPU is
its whole process tree's (bench/kafka/cputime.py), the JVM included; a
run over a 46-row file gives that fixed cost.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EDDY_SQL = """
CREATE SOURCE bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'file', path = '{input}', format = '{format}');

CREATE SINK windows WITH (connector = 'file', path = '{output}', format = 'json') AS
SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
"""

DUCKDB_QUERY = """
SELECT auction, epoch_ms(time_bucket(INTERVAL 10 SECOND, date_time)) AS window_start,
       count(*) AS bids, max(price) AS top
FROM {scan}
GROUP BY ALL
"""
DUCKDB_SCANS = {
    "json": """read_json('{input}', format = 'newline_delimited',
               columns = {{auction: 'BIGINT', bidder: 'BIGINT', price: 'BIGINT',
                          channel: 'VARCHAR', url: 'VARCHAR', date_time: 'TIMESTAMP',
                          extra: 'VARCHAR'}})""",
    "parquet": "read_parquet('{input}')",
}

# The JSON bids rewritten as Parquet, by eddy.
TO_PARQUET_SQL = """
SET 'execution.checkpointing.interval' = '1 h';
CREATE SOURCE bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR
) WITH (connector = 'file', path = '{input}', format = 'json');
CREATE SINK pq WITH (connector = 'file', path = '{output}/', format = 'parquet',
                     'parquet.block.size' = '16 mb',
                     'sink.rolling-policy.file-size' = '4 gb') AS SELECT * FROM bids;
"""

# Flink's DDL for the same query: the file's `Z` timestamps read as
# TIMESTAMP_LTZ, the windows into JSON part files.
FLINK_SQL = """
CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP_LTZ(3), extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = 'json',
      'json.timestamp-format.standard' = 'ISO-8601');
CREATE TABLE windows (auction BIGINT, window_start TIMESTAMP_LTZ(3), bids BIGINT, top BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{output}', 'format' = 'json');
INSERT INTO windows
SELECT auction, window_start, COUNT(*) AS bids, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end
"""

# Runs the statements of FLINK_SQL (on stdin) with PyFlink, to their end.
FLINK_CHILD = """
import sys
from pyflink.table import EnvironmentSettings, TableEnvironment
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", "{parallelism}")
env.get_config().set("restart-strategy.type", "none")
statements = [s.strip() for s in sys.stdin.read().split(";") if s.strip()]
for statement in statements[:-1]:
    env.execute_sql(statement)
env.execute_sql(statements[-1]).wait()
"""

# Runs in a child process: the query, then its answer as JSON on stdout.
# DuckDB is timed inside that process, around the query alone: Python's
# start and `import duckdb` are not counted against it.
DUCKDB_CHILD = """
import json, resource, sys, time, duckdb
con = duckdb.connect()
con.execute("SET threads = {threads}")
query = sys.stdin.read()
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.monotonic()
rows = con.execute(query).fetchall()
json.dump({{"wall": time.monotonic() - t0, "cpu": cpu() - c0, "rows": rows}}, sys.stdout)
"""


def timed(cmd, stdin=None):
    """Runs `cmd`; returns (stdout, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def eddy_run(eddy, input_path, parallelism, work, fmt):
    output = os.path.join(work, f"eddy-p{parallelism}.json")
    if os.path.exists(output):
        os.remove(output)
    state = os.path.join(work, f"state-{parallelism}")
    shutil.rmtree(state, ignore_errors=True)
    sql = os.path.join(work, "tumble.sql")
    with open(sql, "w") as f:
        f.write(EDDY_SQL.format(input=input_path, output=output, format=fmt))
    _, wall, cpu = timed(
        [eddy, "run", sql, "--parallelism", str(parallelism), "--quiet",
         "--state-dir", state]
    )
    rows = []
    with open(output) as f:
        for line in f:
            r = json.loads(line)
            start = r["window_start"]
            rows.append((r["auction"], start, r["bids"], r["top"]))
    return rows, wall, cpu


def duckdb_run(input_path, threads, fmt):
    scan = DUCKDB_SCANS[fmt].format(input=input_path)
    out, _, _ = timed(
        [sys.executable, "-c", DUCKDB_CHILD.format(threads=threads)],
        stdin=DUCKDB_QUERY.format(scan=scan),
    )
    answer = json.loads(out)
    return [tuple(r) for r in answer["rows"]], answer["wall"], answer["cpu"]


def flink_run(python, input_path, parallelism, work):
    """Flink over the JSON file; wall and CPU of its whole process tree."""
    output = os.path.join(work, "flink-out")
    shutil.rmtree(output, ignore_errors=True)
    sql = FLINK_SQL.format(input=input_path, output=output)
    log = os.path.join(work, "flink.log")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "kafka", "cputime.py"), log,
         python, "-c", FLINK_CHILD.format(parallelism=parallelism)],
        input=sql, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"flink failed:\n{open(log).read()[-3000:]}")
    wall, cpu = (float(x) for x in done.stderr.split()[-2:])
    rows = []
    for name in sorted(os.listdir(output)):
        if name.startswith("part-"):
            with open(os.path.join(output, name)) as f:
                for line in f:
                    r = json.loads(line)
                    rows.append((r["auction"], r["window_start"], r["bids"], r["top"]))
    return rows, wall, cpu


def normalize_flink(rows):
    """Flink's `2025-01-01 00:00:10Z` window starts as epoch milliseconds."""
    return normalize_eddy([(a, s.replace(" ", "T"), n, top) for a, s, n, top in rows])


def normalize_eddy(rows):
    """Window starts as epoch milliseconds, as DuckDB's answer has them."""
    from datetime import datetime, timezone

    def ms(text):
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return int(t.replace(tzinfo=timezone.utc).timestamp() * 1000)

    return sorted((a, ms(s), n, top) for a, s, n, top in rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eddy", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "eddy"))
    p.add_argument("--input", default=os.path.join(ROOT, "out", "bids-2m.json"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--format", choices=sorted(DUCKDB_SCANS), default="json")
    p.add_argument("--flink-python", help="the Python of a venv with apache-flink 2.3")
    args = p.parse_args()
    input_path = os.path.abspath(args.input)
    if not os.path.exists(input_path):
        print(f"writing {input_path}", file=sys.stderr)
        subprocess.run([args.eddy, "run", "examples/bench/bids-2m-json.sql", "--quiet"],
                       cwd=ROOT, check=True)
    with open(input_path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    size = os.path.getsize(input_path)
    print(f"input: {input_path}, {lines:,} bids, {size / 1e6:.0f} MB", file=sys.stderr)
    if args.format == "parquet":
        json_path, input_path = input_path, os.path.splitext(input_path)[0] + ".parquet"
        if not os.path.isfile(input_path):
            with tempfile.TemporaryDirectory() as parts, \
                    tempfile.NamedTemporaryFile("w", suffix=".sql") as sql:
                sql.write(TO_PARQUET_SQL.format(input=json_path, output=parts))
                sql.flush()
                # One writer reading the file in order: the Parquet rows keep the
                # JSON file's order (two would interleave byte ranges).
                subprocess.run([args.eddy, "run", sql.name, "--quiet", "--parallelism", "1"],
                               cwd=ROOT, check=True)
                # One part: a file whose row groups are read on every core.
                [part] = [f for f in os.listdir(parts) if f.endswith(".parquet")]
                shutil.move(os.path.join(parts, part), input_path)
        size = os.path.getsize(input_path)
        print(f"as Parquet: {input_path}, {size / 1e6:.0f} MB", file=sys.stderr)

    engines = [(f"Eddy, parallelism {n}",
                lambda n=n, w=None: eddy_run(args.eddy, input_path, n, w, args.format))
               for n in (1, args.threads)]
    engines.append((f"DuckDB {__import__('duckdb').__version__}, {args.threads} threads",
                     lambda w=None: duckdb_run(input_path, args.threads, args.format)))
    if args.flink_python:
        json_input = os.path.abspath(args.input)
        engines.append((f"Apache Flink 2.3 (JSON), parallelism {args.threads}",
                        lambda w=None: flink_run(args.flink_python, json_input, args.threads, w)))
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for run in range(args.runs):
            for name, engine in engines:
                if name.startswith("Eddy"):
                    rows, wall, cpu = engine(w=work)
                    rows = normalize_eddy(rows)
                elif name.startswith("Apache Flink"):
                    rows, wall, cpu = engine(w=work)
                    rows = normalize_flink(rows)
                else:
                    rows, wall, cpu = engine()
                    rows = sorted(rows)
                results.setdefault(name, []).append((wall, cpu, rows))
                print(f"run {run + 1}: {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                      f"{len(rows)} windows", file=sys.stderr)

    answers = {name: runs[0][2] for name, runs in results.items()}
    first = next(iter(answers.values()))
    equal = all(a == first for a in answers.values())
    print("| engine | wall (median) | CPU (median) | rows per CPU-second | windows | same answer |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rows = answers[name]
        same = "yes" if rows == first else "**no**"
        print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {lines / cpu / 1e6:.2f}M "
              f"| {len(rows):,} | {same} |")
    checksum = (len(first), sum(r[2] for r in first), sum(r[3] for r in first))
    print(f"\nanswer: {checksum[0]:,} windows, {checksum[1]:,} bids, sum of maxima {checksum[2]:,}")
    if not equal:
        sys.exit("the engines' answers differ")


if __name__ == "__main__":
    main()
