DROP INDEX coupons_notice_due_idx;
ALTER TABLE coupons DROP COLUMN notice_claim, DROP COLUMN notice_claimed_at;
