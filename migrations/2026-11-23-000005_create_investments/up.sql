-- Investment products: a target, what is invested so far, the distinct
-- investors, and the recruiting window. `current_amount <= total_amount` is
-- the invariant; every investment raises it in one guarded UPDATE, and the
-- CHECK is the last line of defence.
CREATE TABLE invest_products (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title          VARCHAR(200) NOT NULL,
    total_amount   BIGINT       NOT NULL,
    current_amount BIGINT       NOT NULL DEFAULT 0,
    investor_count BIGINT       NOT NULL DEFAULT 0,
    started_at     TIMESTAMPTZ  NOT NULL,
    finished_at    TIMESTAMPTZ  NOT NULL,
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT invest_products_total_check CHECK (total_amount > 0),
    CONSTRAINT invest_products_current_check CHECK (
        current_amount >= 0 AND current_amount <= total_amount),
    CONSTRAINT invest_products_investors_check CHECK (investor_count >= 0),
    CONSTRAINT invest_products_window_check CHECK (started_at < finished_at)
);
-- The open list: newest start first, filtered on the window.
CREATE INDEX invest_products_started_idx ON invest_products (started_at DESC, id DESC);

-- One row per investment; a user may invest in a product several times.
CREATE TABLE investments (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id  BIGINT      NOT NULL REFERENCES invest_products (id),
    user_id     BIGINT      NOT NULL REFERENCES users (id),
    amount      BIGINT      NOT NULL,
    invested_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT investments_amount_check CHECK (amount > 0)
);
-- "Has this user invested in this product before?" (the distinct count).
CREATE INDEX investments_product_user_idx ON investments (product_id, user_id);
-- "My investments", newest first.
CREATE INDEX investments_user_idx ON investments (user_id, invested_at DESC, id DESC);
