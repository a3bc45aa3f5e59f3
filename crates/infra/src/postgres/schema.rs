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
