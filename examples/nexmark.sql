-- The Nexmark bid stream from Eddy's built-in generator: 1M events at
-- 10,000 events per second of event time, i.e. 100 seconds of auctions.
CREATE SOURCE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', table = 'bid', 'events.num' = '1000000', 'first-event.rate' = '10000');

-- Every 10 seconds: how many bids, on how many auctions, at what prices.
SELECT window_start, window_end,
       COUNT(*) AS bids,
       COUNT(DISTINCT auction) AS auctions,
       MAX(price) AS top_price,
       AVG(price) / 100.0 AS avg_dollars
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
