-- Products with live stock. The CHECK is the last line of defence behind the
-- guarded decrement (`stock = stock - q WHERE stock >= q`).
CREATE TABLE products (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       VARCHAR(200) NOT NULL,
    price      BIGINT       NOT NULL,
    stock      BIGINT       NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT products_price_check CHECK (price >= 0),
    CONSTRAINT products_stock_check CHECK (stock >= 0)
);

-- Paid orders. An order is written whole in one transaction with its stock
-- decrements, its payment and its outbox event.
CREATE TABLE orders (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    status          VARCHAR(16) NOT NULL DEFAULT 'PAID',
    total_amount    BIGINT      NOT NULL,
    discount_amount BIGINT      NOT NULL DEFAULT 0,
    paid_amount     BIGINT      NOT NULL,
    coupon_code     VARCHAR(64),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_status_check CHECK (status IN ('PAID')),
    CONSTRAINT orders_amounts_check CHECK (
        total_amount >= 0 AND discount_amount >= 0 AND discount_amount <= total_amount
        AND paid_amount = total_amount - discount_amount)
);
-- "My orders", newest first.
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id DESC);
-- Popular products' SQL fallback reads the paid orders of the last 72 hours.
CREATE INDEX orders_created_at_idx ON orders (created_at);

CREATE TABLE order_items (
    order_id   BIGINT       NOT NULL REFERENCES orders (id),
    product_id BIGINT       NOT NULL REFERENCES products (id),
    name       VARCHAR(200) NOT NULL,
    quantity   BIGINT       NOT NULL,
    unit_price BIGINT       NOT NULL,
    line_total BIGINT       NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_items_quantity_check CHECK (quantity BETWEEN 1 AND 1000),
    CONSTRAINT order_items_line_total_check CHECK (line_total = quantity * unit_price)
);

-- Transactional outbox: events written in the same transaction as the change
-- they describe, published to the Redis stream by the relay afterwards.
CREATE TABLE outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    event_type   VARCHAR(64) NOT NULL,
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
-- The relay reads unpublished rows in id order.
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
