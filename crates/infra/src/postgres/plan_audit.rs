//! Which plans a lanes' pool cached read a growing table without a key.
//!
//! Postgres keeps each prepared statement's plan on its connection. The
//! lanes plan once per connection (`force_generic_plan`), on whatever the
//! tables hold at that moment, and that is often nothing: a fresh database,
//! the first minute of a sale. A plan made then may read a whole table, or
//! a whole index, that the sale then fills: the soak's investments query
//! did, and grew from 12 to 43 ms a call in ten minutes
//! (docs/reliability.md, "Soak"). Connections are retired after minutes
//! ([`RETIRE_AFTER`](super::RETIRE_AFTER)), which bounds such a plan's life;
//! this audit keeps such plans out in the first place. The stores' tests
//! run a batch's statements on an empty database, where the plans are made,
//! and then require [`unkeyed_scans`] to find none.
//!
//! A scan of a growing table passes when it is an index scan whose index
//! condition has an equality (`col = $1`, `col = t.col`, `col = ANY(…)`,
//! so it reads what the key finds), or a scan by row id. A sequential scan,
//! an index scan by a range or by a partial index's predicate alone, reads
//! more as the table grows, and is reported. The growing tables are those
//! that grow with each request ([`GROWING_TABLES`]); the catalogue's
//! (wallets, products, investment products, users) grow with sign-ups and
//! an admin's work, a scan of a small one is the right plan, and they are
//! left to retirement.
//!
//! For the lanes' pools only: `EXPLAIN EXECUTE` with null arguments shows
//! the cached plan when it is generic (`force_generic_plan`); on a pool that
//! plans per execution, null arguments would get a plan of their own.

use diesel::QueryableByName;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::error::Unavailable;
use futures_util::future::try_join_all;

use super::{Postgres, unavailable};

/// The tables that grow with each request; see the module header.
pub const GROWING_TABLES: &[&str] = &[
    "orders",
    "order_items",
    "investments",
    "idempotency_keys",
    "point_ledger",
    "outbox",
    "coupons",
];

#[derive(QueryableByName)]
struct Statement {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = Integer)]
    params: i32,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A cached plan that reads a growing table without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnkeyedScan {
    /// The table it scans.
    pub table: String,
    /// The statement's text.
    pub statement: String,
    /// The plan, as `EXPLAIN` printed it.
    pub plan: String,
}

/// Every statement prepared on every connection `lanes` holds now whose
/// cached plan scans one of [`GROWING_TABLES`] without a key (see the
/// module header). Takes all of the pool's connections at once, so each is
/// looked at; `lanes` must be a single pool (as the lanes' are), not one per
/// thread.
///
/// # Errors
/// [`Unavailable`] when a connection or a query fails.
pub async fn unkeyed_scans(lanes: &Postgres) -> Result<Vec<UnkeyedScan>, Unavailable> {
    let size = lanes.status().size.max(1);
    let mut conns = try_join_all((0..size).map(|_| lanes.conn())).await?;
    let mut found = Vec::new();
    for conn in &mut conns {
        let conn: &mut AsyncPgConnection = conn;
        // Not itself: a statement Diesel does not cache is prepared for one
        // run and closed after it.
        let statements: Vec<Statement> = diesel::sql_query(
            "SELECT name, statement, coalesce(cardinality(parameter_types), 0) AS params \
               FROM pg_prepared_statements \
              WHERE from_sql = false AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .load(conn)
        .await
        .map_err(unavailable)?;
        for s in statements {
            let nulls = vec!["NULL"; usize::try_from(s.params).unwrap_or(0)].join(", ");
            let args = if nulls.is_empty() {
                String::new()
            } else {
                format!("({nulls})")
            };
            let plan: Vec<String> =
                diesel::sql_query(format!("EXPLAIN EXECUTE \"{}\"{args}", s.name))
                    .load::<PlanLine>(conn)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(|l| l.line)
                    .collect();
            for table in unkeyed(&plan) {
                found.push(UnkeyedScan {
                    table,
                    statement: s.statement.clone(),
                    plan: plan.join("\n"),
                });
            }
        }
    }
    Ok(found)
}

/// The growing tables that `plan` (`EXPLAIN`'s lines) scans without a key.
fn unkeyed(plan: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < plan.len() {
        let node = plan[i].trim_start().trim_start_matches("->").trim_start();
        i += 1;
        let Some((kind, table)) = scan_of(node) else {
            continue;
        };
        if !GROWING_TABLES.contains(&table) {
            continue;
        }
        // The node's details: the lines up to the next node.
        let mut keyed = false;
        while i < plan.len() && !plan[i].trim_start().starts_with("->") {
            let detail = plan[i].trim();
            let cond = detail
                .strip_prefix("Index Cond:")
                .or_else(|| detail.strip_prefix("Recheck Cond:"))
                .or_else(|| detail.strip_prefix("TID Cond:"));
            if cond.is_some_and(|c| c.contains(" = ")) && kind != "Seq Scan" {
                keyed = true;
            }
            i += 1;
        }
        if !keyed {
            found.push(table.to_owned());
        }
    }
    found
}

/// A plan node's scan kind and table, if it scans a table.
fn scan_of(node: &str) -> Option<(&'static str, &str)> {
    const KINDS: [(&str, &str); 7] = [
        ("Seq Scan", "Seq Scan on "),
        ("Seq Scan", "Parallel Seq Scan on "),
        ("Index Scan", "Index Scan Backward using "),
        ("Bitmap Heap Scan", "Bitmap Heap Scan on "),
        ("Tid Scan", "Tid Scan on "),
        ("Index Only Scan", "Index Only Scan using "),
        ("Index Scan", "Index Scan using "),
    ];
    for (kind, prefix) in KINDS {
        if let Some(rest) = node.strip_prefix(prefix) {
            let rest = match rest.split_once(" on ") {
                Some((_, table)) if prefix.ends_with("using ") => table,
                _ => rest,
            };
            return rest.split_whitespace().next().map(|table| (kind, table));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::unkeyed;

    fn lines(plan: &str) -> Vec<String> {
        plan.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_scan_of_a_growing_table_passes_only_with_a_key() {
        // The soak's investments query as first planned: a hash join over
        // a scan of the whole table.
        let hash_join = lines(
            "Unique\n  ->  Sort\n        ->  Hash Join\n              Hash Cond: ((i.product_id = t.product_id))\n                    ->  Seq Scan on investments i\n              ->  Hash\n                    ->  Function Scan on t",
        );
        assert_eq!(unkeyed(&hash_join), ["investments"]);
        // Its replacement: a probe per pair.
        let probe = lines(
            "Nested Loop\n  ->  Function Scan on t\n  ->  Limit\n        ->  Index Only Scan using investments_product_user_idx on investments i\n              Index Cond: ((product_id = t.product_id) AND (user_id = t.user_id))",
        );
        assert!(unkeyed(&probe).is_empty());
        // An index read by a range, and a partial index by its predicate.
        let range = lines(
            "Update on coupons c\n  ->  Nested Loop\n        ->  Index Scan using coupons_expiring_idx on coupons c\n              Index Cond: (expires_at > now())\n        ->  Function Scan on coupon_use",
        );
        assert_eq!(unkeyed(&range), ["coupons"]);
        let predicate = lines(
            "LockRows\n  ->  Bitmap Heap Scan on coupons\n        Recheck Cond: ((owner_id IS NOT NULL) AND (used_at IS NULL))\n        Filter: ((code)::text = ANY ($1))\n        ->  Bitmap Index Scan on coupons_expiring_idx",
        );
        assert_eq!(unkeyed(&predicate), ["coupons"]);
        // A small catalogue table may be scanned.
        let catalogue =
            lines("LockRows\n  ->  Seq Scan on products\n        Filter: (id = ANY ($1))");
        assert!(unkeyed(&catalogue).is_empty());
    }
}
