-- Each sink of the outbox keeps its own progress: `published_at` is the
-- Redis stream's, `kafka_published_at` the Kafka topic's. A sink that is
-- down holds back only its own column; its events wait here until it
-- returns. Events committed before this migration are not owed to Kafka.
ALTER TABLE outbox ADD COLUMN kafka_published_at TIMESTAMPTZ;
UPDATE outbox SET kafka_published_at = created_at;
-- The Kafka relay reads its unpublished rows in id order.
CREATE INDEX outbox_kafka_unpublished_idx ON outbox (id) WHERE kafka_published_at IS NULL;
