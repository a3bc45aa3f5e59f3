#!/usr/bin/env bash
# Issue 19's read report: realistic data in a scratch database, then
# EXPLAIN (ANALYZE, BUFFERS) of every read query the service runs
# (docs/caching.md lists them and where each lives in the code).
#
#   scripts/read-report.sh                 # 100k products, 1M orders over 3 days, 1M coupons
#   SCALE=0.01 scripts/read-report.sh      # the same shapes, a hundredth of the rows
#   KEEP=1 scripts/read-report.sh          # keep the database (read_report) afterwards
#
# Needs psql and a Postgres that trusts user postgres on 127.0.0.1:5432 (as
# the README's). Builds the release app only to apply the migrations
# (`app migrate`). The plans go to target/read-report/plans.txt.
#
# The data (seeded with setseed, so two runs make the same rows):
#   users            100,000
#   products         100,000  (stock 0..9,999)
#   orders         1,000,000  over the last 72 hours, 1 to 3 lines each
#                             (~2M order_items); buyers and products skewed
#                             towards low ids, as a sale's hot items are
#   coupon campaigns      20  of 50,000 codes each = 1,000,000 coupons;
#                             60% issued, a third of those used, expiries
#                             spread over the next 30 days
#   invest products   10,000  30-day windows over the last 3 years (about
#                             270 recruiting now)
#   investments    1,000,000
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-1}
DB=${DB:-read_report}
OUT=target/read-report
mkdir -p "$OUT"
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -X -q)

n() { python3 -c "import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$SCALE"; }
USERS=$(n 100000); PRODUCTS=$(n 100000); ORDERS=$(n 1000000)
CAMPAIGNS=20; CODES=$(n 50000); INVEST=$(n 10000); INVESTMENTS=$(n 1000000)

"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
# The same package set as scripts/loadtest.sh, so the two share one build.
cargo build --release -p app -p loadtest >/dev/null 2>&1
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" ./target/release/app migrate >/dev/null

started=$(date +%s)
echo "seeding $DB (scale $SCALE)" >&2
"${PSQL[@]}" -d "$DB" \
  -v users="$USERS" -v products="$PRODUCTS" -v orders="$ORDERS" \
  -v campaigns="$CAMPAIGNS" -v codes="$CODES" -v invest="$INVEST" -v investments="$INVESTMENTS" <<'SQL'
SELECT setseed(0.19);
INSERT INTO users (login_id, name)
SELECT 'user' || g, 'User ' || g FROM generate_series(1, :users) g;

INSERT INTO products (name, price, stock)
SELECT 'Product ' || g, 100 + (g * 37) % 9900, (g * 7919) % 10000
FROM generate_series(1, :products) g;

-- Buyers and first products skewed to low ids (power of a uniform draw).
INSERT INTO orders (user_id, total_amount, paid_amount, created_at)
SELECT 1 + floor(power(random(), 2) * :users)::bigint, 0, 0,
       now() - random() * interval '72 hours'
FROM generate_series(1, :orders);

INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, line_total)
SELECT o.id, p.id, p.name, q, p.price, q * p.price
FROM orders o
CROSS JOIN LATERAL (SELECT 1 + floor(power(random(), 3) * :products)::bigint AS first,
                           1 + (o.id % 3) AS lines, 1 + (o.id % 4) AS q) d
CROSS JOIN LATERAL generate_series(0, d.lines - 1) k
JOIN products p ON p.id = 1 + (d.first - 1 + k * 101) % :products;

UPDATE orders o SET total_amount = t.total, paid_amount = t.total
FROM (SELECT order_id, sum(line_total) AS total FROM order_items GROUP BY order_id) t
WHERE t.order_id = o.id;

INSERT INTO coupon_campaigns (name, discount_type, discount_value, valid_days)
SELECT 'Campaign ' || g, 'AMOUNT', 1000, 30 FROM generate_series(1, :campaigns) g;

-- 60% of each campaign's codes issued (one per user per campaign), a third
-- of those used; expiries over the next 30 days.
INSERT INTO coupons (campaign_id, code, owner_id, issued_at, expires_at, used_at)
SELECT c, code, owner, issued, issued + interval '30 days',
       CASE WHEN owner IS NOT NULL AND g % 3 = 0 THEN issued + interval '1 hour' END
FROM (
  SELECT c, g, upper(md5(c || ':' || g)) AS code,
         CASE WHEN g % 5 < 3 THEN 1 + ((c * 100003 + g * 7919) % :users) END AS owner,
         CASE WHEN g % 5 < 3 THEN now() - random() * interval '30 days' END AS issued
  FROM generate_series(1, :campaigns) c, generate_series(1, :codes) g
) s;

INSERT INTO invest_products (title, total_amount, current_amount, investor_count, started_at, finished_at)
SELECT 'Fund ' || g, 100000000, 0, 0, s, s + interval '30 days'
FROM (SELECT g, now() - interval '3 years' + (g::float / :invest) * interval '3 years' - interval '15 days' AS s
      FROM generate_series(1, :invest) g) w;

INSERT INTO investments (product_id, user_id, amount, invested_at)
SELECT 1 + floor(random() * :invest)::bigint, 1 + floor(power(random(), 2) * :users)::bigint,
       1000 + floor(random() * 100000)::bigint, now() - random() * interval '3 years'
FROM generate_series(1, :investments);

UPDATE invest_products p SET current_amount = least(t.total, p.total_amount), investor_count = t.n
FROM (SELECT product_id, sum(amount) AS total, count(DISTINCT user_id) AS n FROM investments GROUP BY product_id) t
WHERE t.product_id = p.id;

VACUUM ANALYZE;
SQL
echo "seeded in $(( $(date +%s) - started )) s" >&2

# The busiest buyer, investor and coupon holder, and a campaign: the worst
# case of each per-user read.
q() { "${PSQL[@]}" -d "$DB" -Atc "$1"; }
BUYER=$(q "SELECT user_id FROM orders GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
INVESTOR=$(q "SELECT user_id FROM investments GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
HOLDER=$(q "SELECT owner_id FROM coupons WHERE owner_id IS NOT NULL GROUP BY owner_id ORDER BY count(*) DESC LIMIT 1")
ORDER_ID=$(q "SELECT max(id) FROM orders WHERE user_id = $BUYER")
TODAY=$(q "SELECT (now() + interval '7 days')::date")

{
  echo "# read report plans, $(date -u +%FT%TZ), scale $SCALE"
  echo "# buyer $BUYER, investor $INVESTOR, coupon holder $HOLDER, order $ORDER_ID, expiring day $TODAY"
  "${PSQL[@]}" -d "$DB" -e <<SQL
SELECT count(*) AS products, (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM order_items) AS order_items,
       (SELECT count(*) FROM coupons) AS coupons, (SELECT count(*) FROM investments) AS investments,
       (SELECT count(*) FROM invest_products WHERE started_at <= now() AND finished_at >= now()) AS invest_open
FROM products;
-- 2.1 products list (page 0 and page 1,000 of 20)
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM products;
EXPLAIN (ANALYZE, BUFFERS) SELECT id, name, price, stock, products.xmin::text::bigint FROM products ORDER BY id ASC LIMIT 20 OFFSET 0;
EXPLAIN (ANALYZE, BUFFERS) SELECT id, name, price, stock, products.xmin::text::bigint FROM products ORDER BY id ASC LIMIT 20 OFFSET 20000;
-- 2.2 products by id (a batch of 100 ids)
EXPLAIN (ANALYZE, BUFFERS) SELECT id, name, price, stock, products.xmin::text::bigint FROM products WHERE id = ANY((SELECT array_agg(g * 997 % $PRODUCTS + 1) FROM generate_series(1, 100) g)::bigint[]) ORDER BY id ASC;
-- 2.3 popular: the Postgres fallback
EXPLAIN (ANALYZE, BUFFERS) SELECT i.product_id, sum(i.quantity)::bigint AS sold FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.created_at >= now() - make_interval(hours => 72) GROUP BY i.product_id ORDER BY sold DESC, i.product_id ASC LIMIT 5;
-- 2.4 invest products open now (v1 list and legacy /api/product)
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM invest_products WHERE started_at <= now() AND finished_at >= now();
EXPLAIN (ANALYZE, BUFFERS) SELECT id, title, total_amount, current_amount, investor_count, started_at, finished_at FROM invest_products WHERE started_at <= now() AND finished_at >= now() ORDER BY started_at DESC, id DESC LIMIT 20 OFFSET 0;
-- 2.5 invest product detail
EXPLAIN (ANALYZE, BUFFERS) SELECT id, title, total_amount, current_amount, investor_count, started_at, finished_at FROM invest_products WHERE id = 7 LIMIT 1;
-- 2.6 my investments
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM investments WHERE user_id = $INVESTOR;
EXPLAIN (ANALYZE, BUFFERS) SELECT i.id, i.product_id, i.user_id, i.amount, i.invested_at, p.title, p.total_amount FROM investments i JOIN invest_products p ON i.product_id = p.id WHERE i.user_id = $INVESTOR ORDER BY i.invested_at DESC, i.id DESC LIMIT 20 OFFSET 0;
-- 2.7 legacy my/invest
EXPLAIN (ANALYZE, BUFFERS) SELECT count(DISTINCT product_id) AS n FROM investments WHERE user_id = $INVESTOR;
EXPLAIN (ANALYZE, BUFFERS) SELECT i.product_id, p.title, p.total_amount, sum(i.amount)::int8 AS mine, max(i.invested_at) AS last_invested_at FROM investments i JOIN invest_products p ON p.id = i.product_id WHERE i.user_id = $INVESTOR GROUP BY i.product_id, p.title, p.total_amount ORDER BY last_invested_at DESC, i.product_id DESC OFFSET 0 LIMIT 20;
-- 2.8 my orders
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM orders WHERE user_id = $BUYER;
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, total_amount, discount_amount, paid_amount, coupon_code, created_at FROM orders WHERE user_id = $BUYER ORDER BY id DESC LIMIT 20 OFFSET 0;
EXPLAIN (ANALYZE, BUFFERS) SELECT order_id, product_id, name, quantity, unit_price, line_total FROM order_items WHERE order_id = ANY((SELECT array_agg(id) FROM (SELECT id FROM orders WHERE user_id = $BUYER ORDER BY id DESC LIMIT 20) t)::bigint[]) ORDER BY order_id, product_id;
-- 2.9 order detail
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, total_amount, discount_amount, paid_amount, coupon_code, created_at FROM orders WHERE id = $ORDER_ID AND user_id = $BUYER LIMIT 1;
-- 2.10 my coupons (all, and ISSUED)
EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) AS n FROM coupons c WHERE c.owner_id = $HOLDER;
EXPLAIN (ANALYZE, BUFFERS) SELECT c.code, c.campaign_id, k.name, k.discount_type, k.discount_value, k.max_discount_amount, k.min_order_amount, c.issued_at, c.expires_at, c.used_at FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id WHERE c.owner_id = $HOLDER ORDER BY c.expires_at ASC, c.id ASC OFFSET 0 LIMIT 20;
EXPLAIN (ANALYZE, BUFFERS) SELECT c.code, c.campaign_id, k.name, c.issued_at, c.expires_at, c.used_at FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id WHERE c.owner_id = $HOLDER AND c.used_at IS NULL AND c.expires_at > now() ORDER BY c.expires_at ASC, c.id ASC OFFSET 0 LIMIT 20;
-- 2.11 campaign detail: the counts
EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) AS total, count(owner_id) AS issued FROM coupons WHERE campaign_id = 1;
-- 2.12 expiring on a day (first page of 100)
EXPLAIN (ANALYZE, BUFFERS) SELECT id, code, campaign_id, owner_id, expires_at FROM coupons WHERE owner_id IS NOT NULL AND used_at IS NULL AND expires_at >= '$TODAY'::date AND expires_at < '$TODAY'::date + 1 ORDER BY expires_at, id LIMIT 100;
SQL
} > "$OUT/plans.txt" 2>&1
echo "plans in $OUT/plans.txt" >&2
[ "${KEEP:-0}" = 1 ] || "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
