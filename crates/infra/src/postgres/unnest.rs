//! Many rows of a table written by one statement: one Rust struct per row,
//! bound as one array per column for `unnest`.
//!
//! A statement that writes many rows at once binds each column as an array
//! (`unnest($1::int8[], $2::text[]) AS t(id, name)`). Built by hand, those
//! arrays are parallel `Vec`s that must agree in length and position, and a
//! column pushed in one place and forgotten in another shifts every row
//! after it. [`unnest_rows!`] declares the row struct and generates the only
//! code that turns a `Vec` of rows into its column arrays, in field order,
//! bound to the statement's next placeholders. The SQL names the columns in
//! that same order; each statement's unit test checks it against
//! `COLUMNS`, and [`prepared`](super::prepared) checks the placeholder
//! numbering at the first run.

/// Declares a row struct whose fields are `name: RustType as SqlType`, with
///
/// - `COLUMNS`: the field names in order, as the SQL must list them;
/// - `bind_all(rows, statement)`: binds one `Array<SqlType>` per field, in
///   field order, to the next placeholders of a
///   [`Prepared`](super::prepared::Prepared) statement.
macro_rules! unnest_rows {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty as $sql:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )+
        }

        impl $name {
            /// The columns in the order they are bound.
            #[allow(dead_code)] // read by the statements' tests
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// Binds `rows` to the next placeholders of `statement`: one
            /// array per column, in field order.
            pub(crate) fn bind_all<B>(
                rows: Vec<Self>,
                statement: $crate::postgres::prepared::Prepared<B>,
            ) -> $crate::postgres::prepared::Prepared<
                impl $crate::postgres::prepared::Binds + Send,
            >
            where
                B: $crate::postgres::prepared::Binds + Send,
            {
                $( let mut $field: Vec<$ty> = Vec::with_capacity(rows.len()); )+
                for row in rows {
                    $( $field.push(row.$field); )+
                }
                statement $( .bind::<diesel::sql_types::Array<$sql>, _>($field) )+
            }
        }
    };
}

pub(crate) use unnest_rows;

/// For a batch statement's unit test: asserts that `sql` lists each row
/// struct's `COLUMNS` right after the text that reads them (`"AS take"`,
/// `"INSERT INTO orders"`), in the order the statement's function binds
/// the structs.
#[cfg(test)]
pub(crate) fn assert_columns_in_bind_order(sql: &str, bound_in_order: &[(&str, &[&str])]) {
    fn plain(sql: &str) -> String {
        sql.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" (", "(")
    }
    let sql = plain(sql);
    let mut last = 0;
    for (at, columns) in bound_in_order {
        let listed = plain(&format!("{at} ({})", columns.join(", ")));
        let found = sql.find(&listed);
        assert!(found.is_some(), "{listed} is not in the statement");
        assert!(found > Some(last), "{listed} is out of bind order");
        last = found.unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::sql_types::{Int8, Nullable, Text};

    use crate::postgres::prepared::prepared;

    unnest_rows! {
        struct Pair {
            id: i64 as Int8,
            label: Option<String> as Nullable<Text>,
        }
    }

    #[test]
    fn rows_become_one_array_per_column_in_field_order() {
        let rows = vec![
            Pair {
                id: 1,
                label: Some("a".into()),
            },
            Pair { id: 2, label: None },
        ];

        let statement = Pair::bind_all(
            rows,
            prepared("SELECT * FROM unnest($1::int8[], $2::text[]) AS t(id, label)"),
        );
        let shown = diesel::debug_query::<Pg, _>(&statement).to_string();

        assert_eq!(Pair::COLUMNS, ["id", "label"]);
        assert!(
            shown.ends_with(r#"-- binds: [[1, 2], [Some("a"), None]]"#),
            "{shown}"
        );
    }
}
