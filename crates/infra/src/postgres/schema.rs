//! Diesel's view of the tables in `migrations/`. Kept by hand, in step with the SQL.

diesel::table! {
    users (id) {
        id -> Int8,
        login_id -> Varchar,
        name -> Varchar,
        password_hash -> Nullable<Text>,
        role -> Varchar,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    wallets (user_id) {
        user_id -> Int8,
        balance -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    point_ledger (id) {
        id -> Int8,
        user_id -> Int8,
        kind -> Varchar,
        amount -> Int8,
        balance_after -> Int8,
        order_id -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Int8,
        key -> Varchar,
        fingerprint -> Varchar,
        response_status -> Int2,
        response_content_type -> Varchar,
        response_body -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    products (id) {
        id -> Int8,
        name -> Varchar,
        price -> Int8,
        stock -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Int8,
        user_id -> Int8,
        status -> Varchar,
        total_amount -> Int8,
        discount_amount -> Int8,
        paid_amount -> Int8,
        coupon_code -> Nullable<Varchar>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    order_items (order_id, product_id) {
        order_id -> Int8,
        product_id -> Int8,
        name -> Varchar,
        quantity -> Int8,
        unit_price -> Int8,
        line_total -> Int8,
    }
}

diesel::joinable!(order_items -> orders (order_id));
diesel::allow_tables_to_appear_in_same_query!(orders, order_items, products);

diesel::table! {
    coupon_campaigns (id) {
        id -> Int8,
        name -> Varchar,
        discount_type -> Varchar,
        discount_value -> Int8,
        max_discount_amount -> Nullable<Int8>,
        min_order_amount -> Int8,
        valid_days -> Int4,
        issue_starts_at -> Nullable<Timestamptz>,
        issue_ends_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    invest_products (id) {
        id -> Int8,
        title -> Varchar,
        total_amount -> Int8,
        current_amount -> Int8,
        investor_count -> Int8,
        started_at -> Timestamptz,
        finished_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    investments (id) {
        id -> Int8,
        product_id -> Int8,
        user_id -> Int8,
        amount -> Int8,
        invested_at -> Timestamptz,
    }
}

diesel::joinable!(investments -> invest_products (product_id));
diesel::allow_tables_to_appear_in_same_query!(investments, invest_products);
