-- The SQL of one paid order, as the service runs it (crates/infra/src/postgres/
-- ordering.rs and idempotency.rs), for pgbench: the database ceiling of
-- `orders`, `flash-sale` and `burst-100`. `-D hot=1` orders product 1 every
-- time (one hot row); `-D hot=0` draws one of `:products` (rows spread).
\set user random(1, :users)
\if :hot
\set product 1
\else
\set product random(1, :products)
\endif
\set key random(1, 1000000000)
SELECT fingerprint, response_status FROM idempotency_keys WHERE user_id = :user AND key = 'k' || :key;
SELECT id, name, price, stock FROM products WHERE id IN (:product);
BEGIN;
SELECT pg_try_advisory_xact_lock(hashtextextended('idem:' || :user || ':' || :key, 0));
SELECT fingerprint, response_status FROM idempotency_keys WHERE user_id = :user AND key = 'k' || :key;
SAVEPOINT order_effect;
UPDATE products SET stock = stock - 1, updated_at = now() WHERE id = :product AND stock >= 1;
UPDATE wallets SET balance = balance - 100, updated_at = now() WHERE user_id = :user AND balance >= 100 RETURNING balance;
INSERT INTO orders (user_id, total_amount, discount_amount, paid_amount) VALUES (:user, 100, 0, 100) RETURNING id, created_at;
INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, line_total)
  VALUES (currval(pg_get_serial_sequence('orders', 'id')), :product, 'bench', 1, 100, 100);
INSERT INTO point_ledger (user_id, kind, amount, balance_after, order_id)
  VALUES (:user, 'PAYMENT', 100, 0, currval(pg_get_serial_sequence('orders', 'id')));
INSERT INTO outbox (event_id, event_type, payload) VALUES (gen_random_uuid(), 'order.paid', '{"type":"order.paid"}'::jsonb);
RELEASE SAVEPOINT order_effect;
INSERT INTO idempotency_keys (user_id, key, fingerprint, response_status, response_content_type, response_body)
  VALUES (:user, 'k' || :key || '-' || :client_id || '-' || random(), repeat('f', 64), 201, 'application/json',
          convert_to(repeat('x', 300), 'UTF8'));
COMMIT;
