DROP INDEX outbox_kafka_unpublished_idx;
ALTER TABLE outbox DROP COLUMN kafka_published_at;
