-- Clicks from a JSON-lines file; event times may arrive up to 5 s out of order.
CREATE SOURCE clicks (
  user_id VARCHAR, url VARCHAR, ms BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks.json', format = 'json');

-- Per user and 10-second window: clicks, total and slowest latency.
CREATE SINK user_activity WITH (connector = 'file', path = 'out/user_activity/', format = 'json') AS
SELECT user_id, window_start, window_end, COUNT(*) AS clicks, SUM(ms) AS total_ms, MAX(ms) AS slowest_ms
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY user_id, window_start, window_end;

-- And the slow clicks, as they happen.
SELECT user_id, url, ms FROM clicks WHERE ms > 200;
