-- The three Nexmark streams from the built-in generator, with Flink's
-- column names (identifiers are case-insensitive: dateTime = datetime).
CREATE SOURCE person (
  id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR,
  dateTime TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', table = 'person', 'events.num' = '100000');

CREATE SOURCE auction (
  id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
  dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', table = 'auction', 'events.num' = '100000');

CREATE SOURCE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  dateTime TIMESTAMP(3), extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', table = 'bid', 'events.num' = '100000');

-- q13's side input: a bounded table keyed by auction % 10000 (keys 0 to
-- 9999, values side-<key>).
CREATE SOURCE side_input (key BIGINT, `value` VARCHAR)
WITH (connector = 'file', path = 'tests/nexmark/side_input.csv', format = 'csv', 'csv.header' = 'true');
