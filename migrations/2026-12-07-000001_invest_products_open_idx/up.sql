-- The products recruiting now (`started_at <= now AND finished_at >= now`,
-- the v1 list and the first-generation /api/product): the index on
-- started_at alone made the list's count read every product ever started
-- (docs/caching.md, section 9). Open products are the few not finished
-- yet, so this one is read from `finished_at >= now` on, index only.
CREATE INDEX invest_products_open_idx ON invest_products (finished_at, started_at);
