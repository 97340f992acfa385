-- Writes 2M Nexmark bids (2,173,913 events, 92% of them bids) as JSON
-- lines to out/bids-2m.json (about 405 MB): the input of the parallel file
-- read benchmark in BENCHMARKS.md.
CREATE SOURCE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR
) WITH (connector = 'nexmark', table = 'bid', 'events.num' = '2173913', 'first-event.rate' = '10000');

CREATE SINK bids WITH (connector = 'file', path = 'out/bids-2m.json', format = 'json') AS
SELECT * FROM bid;
