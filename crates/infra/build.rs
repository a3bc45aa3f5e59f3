//! `embed_migrations!` (postgres/pool.rs) reads the migrations at compile
//! time, but cargo does not know it does: without this, adding a migration
//! leaves an incremental build embedding the old set (diesel_migrations'
//! documentation asks for this line).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
