-- A CQRS read model kept by SQL: orders arrive on a RabbitMQ queue, and
-- each customer's totals are kept current in a PostgreSQL table, exactly
-- once; an order that does not decode goes to a dead-letter queue with
-- the reason.
--
-- It expects, on this machine:
--   RabbitMQ (guest/guest) with durable queues 'orders' and 'orders.dead';
--   PostgreSQL with max_prepared_transactions > 0 and this table:
--     CREATE TABLE customer_totals (customer text PRIMARY KEY, orders bigint,
--       spent numeric(12, 2), last_order timestamptz);
-- Then: eddy run examples/cqrs-orders.sql --state-dir state
-- and publish orders such as
--   {"order_id": 1, "customer": "ann", "amount": 12.50, "placed_at": "2026-01-05T10:00:00Z"}
-- The job runs until stopped (Ctrl-C takes a last checkpoint); run again
-- with the same --state-dir, it goes on where it stopped.
--
-- tests/rabbitmq.rs runs this file against real servers.

CREATE SINK orders_dlq WITH (
  'connector' = 'rabbitmq', 'url' = 'amqp://guest:guest@localhost:5672/%2f',
  'routing-key' = 'orders.dead');

CREATE TABLE orders (
  order_id BIGINT,
  customer STRING,
  amount DECIMAL(10, 2),
  placed_at TIMESTAMP(3)
) WITH (
  'connector' = 'rabbitmq', 'url' = 'amqp://guest:guest@localhost:5672/%2f',
  'queue' = 'orders', 'prefetch' = '1000',
  'bad-data' = 'dead-letter', 'bad-data.dead-letter-sink' = 'orders_dlq');

CREATE TABLE customer_totals (
  customer STRING,
  orders BIGINT,
  spent DECIMAL(12, 2),
  last_order TIMESTAMP(3),
  PRIMARY KEY (customer) NOT ENFORCED
) WITH (
  'connector' = 'postgres', 'url' = 'postgres://postgres@localhost:5432/postgres',
  'table-name' = 'customer_totals', 'sink.delivery-guarantee' = 'exactly-once');

INSERT INTO customer_totals
SELECT customer, COUNT(*), SUM(amount), MAX(placed_at)
FROM orders
GROUP BY customer;
