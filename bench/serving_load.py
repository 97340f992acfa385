#!/usr/bin/python3
"""Serving under load: a Nexmark job's throughput and the server's memory
with and without many readers of its view.

Starts `eddy server` on free ports, runs a materialized view over the
Nexmark generator at full speed (bids per auction bucket in 10-second
windows), measures the job's rate and the server's memory and CPU for a
baseline period, then again while SSE clients follow the view and Postgres
sessions query it each second, then alone again (the host's speed
drifts; the load is compared with both periods alone). Prints a Markdown
table.

    /usr/bin/python3 bench/serving_load.py --eddy target/release/eddy \
        [--sse 200] [--psql 50] [--baseline 60] [--seconds 300] [--view windows|fixed]

Needs psycopg 3 (Debian's python3-psycopg). The clients run on the same
machine and use CPU of their own, reported apart from the server's.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg

VIEW_SQL = """
CREATE SOURCE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', table = 'bid', 'events.num' = '100000000000',
        'first-event.rate' = '1000000');
{view}
"""
# --view windows: window rows, never dropped, so the view grows with the
# job's speed; --view fixed: an updating aggregate of 100 rows, so that
# what serving costs is measured apart from the view's growth.
VIEWS = {
    "windows": """CREATE MATERIALIZED VIEW buckets AS
  SELECT auction % 100 AS bucket, window_end, COUNT(*) AS bids, MAX(price) AS top
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY auction % 100, window_start, window_end;""",
    "fixed": """CREATE MATERIALIZED VIEW buckets AS
  SELECT auction % 100 AS bucket, COUNT(*) AS bids, MAX(price) AS top
  FROM bid GROUP BY auction % 100;""",
}
QUERY = "SELECT bucket, SUM(bids) AS bids FROM buckets GROUP BY bucket ORDER BY bids DESC LIMIT 5"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None):
    data = body.encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
        return json.loads(r.read())


def proc_stats(pid):
    """The process's resident memory (bytes) and CPU seconds so far."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def own_cpu():
    t = os.times()
    return t.user + t.system


class Clients:
    """SSE followers and Postgres sessions, each on its own thread."""

    def __init__(self, http_port, pg_port, sse, psql):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.changes = 0
        self.bytes = 0
        self.closed = 0
        self.queries = 0
        self.errors = []
        self.threads = [threading.Thread(target=self.follow, args=(http_port,), daemon=True) for _ in range(sse)]
        self.threads += [threading.Thread(target=self.query, args=(pg_port,), daemon=True) for _ in range(psql)]

    def start(self):
        for t in self.threads:
            t.start()

    def follow(self, port):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /api/views/buckets/subscribe HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(1)
            tail = b""
            while not self.stop.is_set():
                try:
                    chunk = s.recv(1 << 16)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                text = tail + chunk
                n = text.count(b"event: change")
                closed = text.count(b"event: close")
                tail = text[-16:]
                with self.lock:
                    self.changes += n
                    self.bytes += len(chunk)
                    self.closed += closed
            s.close()
        except OSError as e:
            with self.lock:
                self.errors.append(f"sse: {e}")

    def query(self, port):
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="eddy", dbname="eddy", autocommit=True) as conn:
                while not self.stop.is_set():
                    conn.execute(QUERY).fetchall()
                    with self.lock:
                        self.queries += 1
                    self.stop.wait(1)
        except psycopg.Error as e:
            with self.lock:
                self.errors.append(f"psql: {e}")

    def totals(self):
        with self.lock:
            return self.changes, self.queries


def sample(api, job, pid, seconds, every, clients=None):
    """Per period of `every` seconds: the job's rows/s, the server's CPU
    cores and RSS, and what the clients got."""
    out = []
    rows0 = http(f"{api}/api/jobs/{job}")["rows_in"]
    rss, cpu0 = proc_stats(pid)
    t0, own0 = time.time(), own_cpu()
    got0 = clients.totals() if clients else (0, 0)
    end = t0 + seconds
    while time.time() < end:
        time.sleep(every)
        rows = http(f"{api}/api/jobs/{job}")["rows_in"]
        rss, cpu = proc_stats(pid)
        t, own = time.time(), own_cpu()
        got = clients.totals() if clients else (0, 0)
        dt = t - t0
        out.append({
            "rate": (rows - rows0) / dt,
            "cores": (cpu - cpu0) / dt,
            "rss": rss,
            "client_cores": (own - own0) / dt,
            "changes": (got[0] - got0[0]) / dt,
            "queries": (got[1] - got0[1]) / dt,
        })
        rows0, cpu0, t0, own0, got0 = rows, cpu, t, own, got
        print(f"  {dt:5.1f}s  {out[-1]['rate'] / 1e6:6.2f}M rows/s  {out[-1]['cores']:.2f} cores  "
              f"RSS {rss / 2**20:6.1f} MiB  clients {out[-1]['client_cores']:.2f} cores  "
              f"{out[-1]['changes']:8.0f} changes/s  {out[-1]['queries']:5.1f} queries/s", file=sys.stderr)
    return out


def mean(xs):
    return sum(xs) / len(xs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--eddy", default="target/release/eddy")
    p.add_argument("--sse", type=int, default=200)
    p.add_argument("--psql", type=int, default=50)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--baseline", type=int, default=60)
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--view", choices=sorted(VIEWS), default="windows")
    args = p.parse_args()
    http_port, pg_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as state:
        log = open(os.path.join(state, "server.log"), "w")
        server = subprocess.Popen(
            [args.eddy, "server", "--state-dir", os.path.join(state, "s"),
             "--listen", f"127.0.0.1:{http_port}", "--pg-listen", f"127.0.0.1:{pg_port}"],
            stderr=log)
        api = f"http://127.0.0.1:{http_port}"
        try:
            for _ in range(100):
                try:
                    http(f"{api}/api/jobs")
                    break
                except OSError:
                    time.sleep(0.1)
            answer = http(f"{api}/api/sql", VIEW_SQL.format(view=VIEWS[args.view]))
            job = answer["results"][1]["job"]
            print(f"job {job}: warming up {args.warmup}s", file=sys.stderr)
            time.sleep(args.warmup)
            print(f"baseline, {args.baseline}s:", file=sys.stderr)
            base = sample(api, job, server.pid, args.baseline, args.every)
            clients = Clients(http_port, pg_port, args.sse, args.psql)
            clients.start()
            time.sleep(5)
            print(f"{args.sse} SSE followers and {args.psql} Postgres sessions, {args.seconds}s:", file=sys.stderr)
            load = sample(api, job, server.pid, args.seconds, args.every, clients)
            clients.stop.set()
            for t in clients.threads:
                t.join(timeout=10)
            # The machine's speed drifts (a shared host): the job alone is
            # measured again after, and the load compared with both.
            print(f"after, alone, {args.baseline}s:", file=sys.stderr)
            after = sample(api, job, server.pid, args.baseline, args.every)
            state_of = http(f"{api}/api/jobs/{job}")["state"]
        finally:
            server.terminate()
            server.wait()
    alone = base + after
    b_rate, l_rate = mean([s["rate"] for s in alone]), mean([s["rate"] for s in load])
    b_core = mean([s["rate"] / s["cores"] for s in alone])
    l_core = mean([s["rate"] / s["cores"] for s in load])
    rss = [s["rss"] / 2**20 for s in load]
    print(f"| phase | rows/s | rows per server CPU-second | server cores | server RSS (MiB) | client cores | changes delivered/s | queries/s |")
    print(f"|---|---|---|---|---|---|---|---|")
    print(f"| baseline, {args.baseline} s | {b_rate / 1e6:.2f}M | {b_core / 1e6:.2f}M | {mean([s['cores'] for s in base]):.2f} | "
          f"{base[0]['rss'] / 2**20:.0f} → {base[-1]['rss'] / 2**20:.0f} | – | – | – |")
    print(f"| {args.sse} SSE + {args.psql} psql, {args.seconds} s | {l_rate / 1e6:.2f}M | {l_core / 1e6:.2f}M | "
          f"{mean([s['cores'] for s in load]):.2f} | {rss[0]:.0f} → {rss[-1]:.0f} (max {max(rss):.0f}) | "
          f"{mean([s['client_cores'] for s in load]):.2f} | {mean([s['changes'] for s in load]):.0f} | "
          f"{mean([s['queries'] for s in load]):.1f} |")
    print(f"| after, alone, {args.baseline} s | {mean([s['rate'] for s in after]) / 1e6:.2f}M | "
          f"{mean([s['rate'] / s['cores'] for s in after]) / 1e6:.2f}M | {mean([s['cores'] for s in after]):.2f} | "
          f"{after[0]['rss'] / 2**20:.0f} → {after[-1]['rss'] / 2**20:.0f} | – | – | – |")
    print(f"\nthroughput change against the job alone (before and after): {100 * (l_rate / b_rate - 1):+.1f}% by the clock, "
          f"{100 * (l_core / b_core - 1):+.1f}% per server CPU-second; job {state_of}; "
          f"{clients.closed} SSE clients dropped as too slow; {len(clients.errors)} client errors"
          + (f" (first: {clients.errors[0]})" if clients.errors else ""))


if __name__ == "__main__":
    main()
