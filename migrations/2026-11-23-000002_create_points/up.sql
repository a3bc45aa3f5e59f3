-- Prepaid balances. A wallet row appears with the first charge; the CHECK is
-- the last line of defence behind the guarded UPDATEs (0..=100,000,000).
CREATE TABLE wallets (
    user_id    BIGINT      PRIMARY KEY REFERENCES users (id),
    balance    BIGINT      NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT wallets_balance_check CHECK (balance >= 0 AND balance <= 100000000)
);

-- Every change of a balance, with the balance after it. Written in the same
-- transaction as the wallet update.
CREATE TABLE point_ledger (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT      NOT NULL REFERENCES users (id),
    kind          VARCHAR(16) NOT NULL,
    amount        BIGINT      NOT NULL,
    balance_after BIGINT      NOT NULL,
    order_id      BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT point_ledger_kind_check CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')),
    CONSTRAINT point_ledger_amount_check CHECK (amount > 0),
    CONSTRAINT point_ledger_balance_after_check CHECK (balance_after >= 0)
);
-- History is read per user, newest first.
CREATE INDEX point_ledger_user_id_id_idx ON point_ledger (user_id, id DESC);

-- Responses of idempotent writes, keyed by (user, Idempotency-Key), written in
-- the same transaction as the write's effect. Rows older than the retention
-- (24 h by default) are ignored and purged.
CREATE TABLE idempotency_keys (
    user_id               BIGINT       NOT NULL,
    key                   VARCHAR(128) NOT NULL,
    fingerprint           VARCHAR(64)  NOT NULL,
    response_status       SMALLINT     NOT NULL,
    response_content_type VARCHAR(100) NOT NULL,
    response_body         BYTEA        NOT NULL,
    created_at            TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
