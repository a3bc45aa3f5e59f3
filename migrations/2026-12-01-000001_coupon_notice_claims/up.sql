-- Expiry notices are claimed, written, then marked (notified_at). A claim
-- is the time it was taken and a token naming the run that took it; a claim
-- older than its lifetime (APP_NOTICE_CLAIM_TTL) is taken again, so a run
-- that dies between claiming and marking loses no notice.
ALTER TABLE coupons
    ADD COLUMN notice_claimed_at TIMESTAMPTZ,
    ADD COLUMN notice_claim      BIGINT;
-- Coupons whose notice is still owed, by expiry: what every notice run reads.
CREATE INDEX coupons_notice_due_idx ON coupons (expires_at, id)
    WHERE owner_id IS NOT NULL AND used_at IS NULL AND notified_at IS NULL;
