//! Hand-written SQL that Postgres prepares once per connection.
//!
//! Diesel never caches a `sql_query` statement (it cannot know whether the
//! text was built at run time), so each run is parsed and planned again, on
//! the hottest paths too (`docs/performance.md` has the profile). [`prepared`]
//! takes SQL that is a `&'static str`,
//! so the set of statements is bounded and safe to keep, and Diesel's
//! statement cache keys it by its text.
//!
//! The placeholders must be `$1`, `$2`, … in the order of the text, each used
//! once, and bound in that order: Diesel numbers binds as they are pushed.
//! A statement that breaks the rule fails with an error at its first run
//! (every statement here runs in the tests).

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, result::Error};

/// A statement of static text and its binds, as `diesel::sql_query` builds
/// one, but cacheable.
#[must_use = "a statement does nothing until it is run"]
pub(crate) struct Prepared<B> {
    sql: &'static str,
    binds: B,
}

/// `sql` with no binds yet.
pub(crate) fn prepared(sql: &'static str) -> Prepared<()> {
    Prepared { sql, binds: () }
}

/// One bound value of SQL type `ST`, after the binds `Rest`.
pub(crate) struct Bound<Rest, ST, T> {
    rest: Rest,
    value: T,
    sql_type: PhantomData<ST>,
}

impl<B> Prepared<B> {
    /// Binds the next placeholder.
    pub(crate) fn bind<ST, T>(self, value: T) -> Prepared<Bound<B, ST, T>> {
        Prepared {
            sql: self.sql,
            binds: Bound {
                rest: self.binds,
                value,
                sql_type: PhantomData,
            },
        }
    }
}

/// The binds of a statement, pushed in order between the pieces of its text.
pub(crate) trait Binds {
    /// Pushes the text before each bind and the bind itself; returns how
    /// many binds were pushed.
    fn push<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        pieces: &mut Pieces<'b>,
    ) -> QueryResult<usize>;
}

impl Binds for () {
    fn push<'b>(&'b self, _: &mut AstPass<'_, 'b, Pg>, _: &mut Pieces<'b>) -> QueryResult<usize> {
        Ok(0)
    }
}

impl<Rest, ST, T> Binds for Bound<Rest, ST, T>
where
    Rest: Binds,
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg>,
{
    fn push<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        pieces: &mut Pieces<'b>,
    ) -> QueryResult<usize> {
        let before = self.rest.push(out, pieces)?;
        let (text, number) = pieces.next_placeholder()?;
        if number != before + 1 {
            return Err(misnumbered(pieces.sql));
        }
        out.push_sql(text);
        out.push_bind_param::<ST, T>(&self.value)?;
        Ok(number)
    }
}

/// The text of a statement cut at its placeholders.
pub(crate) struct Pieces<'a> {
    sql: &'static str,
    rest: &'a str,
}

impl<'a> Pieces<'a> {
    /// The text up to the next `$n`, and `n`.
    fn next_placeholder(&mut self) -> QueryResult<(&'a str, usize)> {
        let bytes = self.rest.as_bytes();
        let at = (0..bytes.len())
            .find(|&i| bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            .ok_or_else(|| misnumbered(self.sql))?;
        let digits = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = self.rest[at + 1..at + 1 + digits]
            .parse()
            .map_err(|_| misnumbered(self.sql))?;
        let text = &self.rest[..at];
        self.rest = &self.rest[at + 1 + digits..];
        Ok((text, number))
    }
}

fn misnumbered(sql: &str) -> Error {
    Error::QueryBuilderError(
        format!("placeholders must be $1, $2, … in order, each once, one per bind: {sql}").into(),
    )
}

impl<B: Binds> QueryFragment<Pg> for Prepared<B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut pieces = Pieces {
            sql: self.sql,
            rest: self.sql,
        };
        self.binds.push(&mut out, &mut pieces)?;
        if pieces.next_placeholder().is_ok() {
            return Err(misnumbered(self.sql)); // more placeholders than binds
        }
        out.push_sql(pieces.rest);
        Ok(())
    }
}

impl<B> QueryId for Prepared<B> {
    type QueryId = ();
    // Not static: the cache keys the statement by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Prepared<B> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::sql_types::{Int8, Text};

    use super::*;

    fn sql_of<B: Binds>(q: &Prepared<B>) -> QueryResult<String> {
        diesel::debug_query::<Pg, _>(q)
            .to_string()
            .split(" -- binds")
            .next()
            .map(str::to_owned)
            .ok_or(Error::NotFound)
    }

    #[test]
    fn the_text_is_sent_as_written_with_its_binds() {
        let q = prepared("SELECT $1::int8 + $2, $3::text")
            .bind::<Int8, _>(1_i64)
            .bind::<Int8, _>(2_i64)
            .bind::<Text, _>("x");

        assert_eq!(sql_of(&q).expect("valid"), "SELECT $1::int8 + $2, $3::text");
    }

    #[test]
    fn placeholders_out_of_order_or_unbound_are_refused() {
        let swapped = prepared("SELECT $2, $1")
            .bind::<Int8, _>(1_i64)
            .bind::<Int8, _>(2_i64);
        let unbound = prepared("SELECT $1, $2").bind::<Int8, _>(1_i64);
        let extra = prepared("SELECT 1").bind::<Int8, _>(1_i64);

        for (name, result) in [
            ("swapped", swapped.to_sql_string()),
            ("unbound", unbound.to_sql_string()),
            ("extra", extra.to_sql_string()),
        ] {
            assert!(result.is_err(), "{name}: {result:?}");
        }
    }

    impl<B: Binds> Prepared<B> {
        fn to_sql_string(&self) -> QueryResult<String> {
            let mut qb = <Pg as diesel::backend::Backend>::QueryBuilder::default();
            self.to_sql(&mut qb, &Pg)?;
            Ok(diesel::query_builder::QueryBuilder::finish(qb))
        }
    }
}
