-- The parallel file read benchmark (BENCHMARKS.md): out/bids-2m.json (see
-- bids-2m-json.sql) through a 10-second tumbling count and maximum per
-- auction. The file is cut into byte ranges of 32 MB that every subtask of
-- the source reads in turn (`--parallelism`).
CREATE SOURCE bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'file', path = 'out/bids-2m.json', format = 'json');

CREATE SINK windows WITH (connector = 'blackhole') AS
SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
