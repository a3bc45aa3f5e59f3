-- Coupon campaigns: the discount rule and the issue window.
CREATE TABLE coupon_campaigns (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                VARCHAR(200) NOT NULL,
    discount_type       VARCHAR(8)   NOT NULL,
    discount_value      BIGINT       NOT NULL,
    max_discount_amount BIGINT,
    min_order_amount    BIGINT       NOT NULL DEFAULT 0,
    valid_days          INT          NOT NULL,
    issue_starts_at     TIMESTAMPTZ,
    issue_ends_at       TIMESTAMPTZ,
    created_at          TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT coupon_campaigns_type_check CHECK (discount_type IN ('AMOUNT', 'PERCENT')),
    CONSTRAINT coupon_campaigns_value_check CHECK (
        discount_value > 0 AND (discount_type <> 'PERCENT' OR discount_value <= 100)),
    CONSTRAINT coupon_campaigns_max_check CHECK (max_discount_amount IS NULL OR max_discount_amount > 0),
    CONSTRAINT coupon_campaigns_min_check CHECK (min_order_amount >= 0),
    CONSTRAINT coupon_campaigns_days_check CHECK (valid_days BETWEEN 1 AND 3650),
    CONSTRAINT coupon_campaigns_window_check CHECK (
        issue_starts_at IS NULL OR issue_ends_at IS NULL OR issue_starts_at < issue_ends_at)
);

-- The pool of codes. A code is free (owner_id NULL), issued to one user, or
-- used. Codes are unique across all campaigns; a user holds at most one
-- code per campaign (NULL owners never conflict).
CREATE TABLE coupons (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   BIGINT      NOT NULL REFERENCES coupon_campaigns (id),
    code          VARCHAR(64) NOT NULL,
    owner_id      BIGINT      REFERENCES users (id),
    issued_at     TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ,
    used_at       TIMESTAMPTZ,
    used_order_id BIGINT,
    notified_at   TIMESTAMPTZ,
    CONSTRAINT coupons_code_key UNIQUE (code),
    CONSTRAINT coupons_campaign_owner_key UNIQUE (campaign_id, owner_id),
    CONSTRAINT coupons_issued_check CHECK (
        (owner_id IS NULL AND issued_at IS NULL AND expires_at IS NULL AND used_at IS NULL)
        OR (owner_id IS NOT NULL AND issued_at IS NOT NULL AND expires_at IS NOT NULL))
);
-- First-come issue takes the lowest free code of a campaign (SKIP LOCKED).
CREATE INDEX coupons_free_idx ON coupons (campaign_id, id) WHERE owner_id IS NULL;
-- "My coupons", by expiry.
CREATE INDEX coupons_owner_idx ON coupons (owner_id, expires_at) WHERE owner_id IS NOT NULL;
-- Expiring lists and notices: issued, unused coupons by expiry.
CREATE INDEX coupons_expiring_idx ON coupons (expires_at, id) WHERE owner_id IS NOT NULL AND used_at IS NULL;
