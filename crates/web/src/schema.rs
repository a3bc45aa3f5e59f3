//! OpenAPI schemas of request fields whose rules a type, a length and a
//! minimum cannot say, written so that a string matches the documented
//! `pattern` exactly when the server accepts it. A fuzzer (schemathesis)
//! trusts the document both ways: a string the pattern allows must be
//! accepted, one it refuses must be refused. The tests below hold each
//! pattern against the domain's own parser.
//!
//! Patterns use only `^`, `$`, classes, `?`, `*`, `{m,n}` and `\uXXXX`
//! escapes, which read the same in ECMA-262 (JSON Schema's dialect), Python
//! and Rust.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// White space as Rust's `str::trim` strips it (the Unicode `White_Space`
/// property), for use inside a character class.
const WHITE_SPACE: &str =
    "\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// One character that is neither white space nor a control character.
const VISIBLE: &str =
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// One character that is not a control character (`char::is_control`, Cc).
const NOT_CONTROL: &str = "[^\\u0000-\\u001f\\u007f-\\u009f]";

/// A name as the domain reads it (`ProductName`, `CampaignName`,
/// `InvestTitle`, `UserName`): surrounding white space is trimmed, then 1 to
/// `max` characters without control characters remain.
pub fn trimmed_text_pattern(max: usize) -> String {
    let inner = max.saturating_sub(2);
    format!("^[{WHITE_SPACE}]*{VISIBLE}({NOT_CONTROL}{{0,{inner}}}{VISIBLE})?[{WHITE_SPACE}]*$")
}

/// A coupon code as `CouponCode::parse` reads it (any case: it is upper-cased).
pub const COUPON_CODE_PATTERN: &str = "^[A-Za-z0-9-]{4,64}$";

/// The `after` cursor of `GET /admin/coupons/expiring`: microseconds since
/// the epoch, a dot, a coupon id (both at most 18 digits, so every cursor
/// that matches names an instant Postgres can compare with).
pub const EXPIRING_CURSOR_PATTERN: &str = "^[0-9]{1,18}\\.[0-9]{1,18}$";

/// The start of a coupon CSV upload as the importer reads it
/// (`application::coupon::CodeRows`, RFC 4180): byte-order marks, then blank
/// rows (every cell empty or white space, quoted or not), then the header
/// row, which has a cell `code` (any ASCII case, white space around it,
/// quoted or not). Cells are unquoted (no comma, quote-free start) or quoted
/// (`""` inside for a quote, commas and line breaks allowed, then anything
/// but a quote after the closing one, which is part of the cell's text);
/// rows end at CR or LF; a quote left open
/// runs to the end of the body. What follows the header never makes the
/// upload fail. (A cell of more than 1,024 bytes is read as neither blank
/// nor `code`; the pattern does not describe that.)
pub fn csv_header_pattern() -> String {
    // Trimmed around a cell: white space and marks, line breaks included
    // (inside quotes); `line` is the same without CR and LF.
    let space = format!("{WHITE_SPACE}\\ufeff");
    let line = space.replace("\\u0009-\\u000d", "\\u0009\\u000b\\u000c");
    let end = "\\u000a\\u000d";
    let [c, o, d, e] = ["[cC]", "[oO]", "[dD]", "[eE]"];
    let code = format!("{c}{o}{d}{e}");
    let unquoted = format!("([^\",{end}][^,{end}]*)?");
    let cell = format!("(\"([^\"]|\"\")*\"{unquoted}|{unquoted})");
    // The body's first cell, after the marks, which are all stripped: a
    // quote after them opens a quoted cell, so no cell starts with a mark.
    let first_cell = format!("(\"([^\"]|\"\")*\"{unquoted}|([^\",{end}\\ufeff][^,{end}]*)?)");
    let blank = format!("(\"[{space}]*\"[{line}]*|[{line}]*)");
    // A quoted cell's text is what is inside the quotes, then what follows
    // the closing one: `"co"de` is `code` too, wherever the quote closes.
    let closes = format!(
        "(\"[{line}]*{code}|{c}\"{o}{d}{e}|{c}{o}\"{d}{e}|{c}{o}{d}\"{e}|{code}[{space}]*\")"
    );
    let code_cell = format!("([{line}]*{code}[{line}]*|\"[{space}]*{closes}[{line}]*)");
    let open = "\"([^\"]|\"\")*$";
    let open_code = format!("\"[{space}]*{code}[{space}]*$");
    format!(
        "^\\ufeff*(({blank}(,{blank})*[{end}])+({cell},)*|({first_cell},({cell},)*)?)\
         ({code_cell}(,{cell})*(,{open})?([{end}]|$)|{open_code})"
    )
}

/// The body of a coupon CSV import: a string that starts with the header.
pub fn csv_upload() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(csv_header_pattern()))
        .description(Some(
            "CSV as a spreadsheet exports it (RFC 4180: quoted fields, CRLF or LF, an \
             optional UTF-8 byte-order mark). The header row names the columns; the one \
             named `code` (any case) holds the codes (4 to 64 of `[A-Z0-9-]`, any case, \
             stored upper-cased), other columns are ignored. Rows without a valid code \
             are reported, not fatal; a header without a `code` column is refused.",
        ))
        .into()
}

fn text(max: usize, nullable: bool, description: &str, example: &str) -> RefOr<Schema> {
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .pattern(Some(trimmed_text_pattern(max)))
        .description(Some(format!(
            "{description}: 1 to {max} characters once surrounding white space is trimmed, \
             no control characters."
        )))
        .examples([example])
        .into()
}

/// `name` of a new product.
pub fn product_name() -> RefOr<Schema> {
    text(200, false, "The product name", "Green tea")
}

/// `name` of a product patch: left out or null keeps the name.
pub fn product_name_patch() -> RefOr<Schema> {
    text(
        200,
        true,
        "The new product name; null keeps it",
        "Green tea",
    )
}

/// `name` of a new coupon campaign.
pub fn campaign_name() -> RefOr<Schema> {
    text(200, false, "The campaign name", "Winter sale")
}

/// `title` of a new investment product.
pub fn invest_title() -> RefOr<Schema> {
    text(200, false, "The product title", "Solar farm, Jeju")
}

/// `name` of a sign-up: the login id when left out or null.
pub fn user_name() -> RefOr<Schema> {
    text(
        100,
        true,
        "A display name; the login id when left out",
        "Alice Kim",
    )
}

/// An instant as RFC 3339 writes it (`2026-12-01T09:30:00Z`,
/// `2026-12-01T18:30:00.5+09:00`): the shape `format: date-time` names,
/// spelled out because JSON Schema makes `format` an annotation, so a
/// client or a fuzzer may otherwise send any string. The server reads a
/// superset (chrono's relaxed RFC 3339); every string this matches is read,
/// except a day the month lacks (`02-30`), which `format` rules out. Leap
/// seconds (`:60`) are left out.
pub const INSTANT_PATTERN: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]\
     ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

fn instant(nullable: bool, description: &str, example: &str) -> RefOr<Schema> {
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .pattern(Some(INSTANT_PATTERN))
        .description(Some(description))
        .examples([example])
        .into()
}

/// `startedAt` of a new investment product.
pub fn recruiting_starts() -> RefOr<Schema> {
    instant(
        false,
        "The recruiting period starts then (RFC 3339) ...",
        "2026-12-01T00:00:00Z",
    )
}

/// `finishedAt` of a new investment product.
pub fn recruiting_ends() -> RefOr<Schema> {
    instant(
        false,
        "... and ends then, after `startedAt`.",
        "2026-12-31T00:00:00Z",
    )
}

/// `issueStartsAt` of a new coupon campaign.
pub fn issue_starts() -> RefOr<Schema> {
    instant(
        true,
        "Coupons are issued from then on (RFC 3339); from now when left out or null.",
        "2026-12-01T00:00:00Z",
    )
}

/// `issueEndsAt` of a new coupon campaign.
pub fn issue_ends() -> RefOr<Schema> {
    instant(
        true,
        "Coupons are issued until then, after `issueStartsAt`; without end when left out or null.",
        "2026-12-31T00:00:00Z",
    )
}

#[cfg(test)]
mod tests {
    use domain::catalog::ProductName;
    use domain::identity::UserName;
    use domain::ordering::CouponCode;
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    fn re(pattern: &str) -> Regex {
        Regex::new(pattern).expect("the pattern compiles")
    }

    /// Characters at every edge of the rules: visible, white space that is
    /// also a control character, white space that is not, other controls,
    /// format characters and astral ones.
    const ALPHABET: &[char] = &[
        'a', 'Z', '7', '-', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}',
        '\u{3000}', '\u{2028}', '\0', '\u{1}', '\u{1f}', '\u{7f}', '\u{9f}', '\u{feff}',
        '\u{200b}', 'é', '한', '😀', '"',
    ];

    fn strings(max_len: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..=max_len)
            .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn the_name_patterns_accept_exactly_what_the_domain_accepts(raw in strings(12)) {
            prop_assert_eq!(
                re(&trimmed_text_pattern(200)).is_match(&raw),
                ProductName::parse(&raw).is_ok(),
                "{:?}", raw
            );
            prop_assert_eq!(
                re(&trimmed_text_pattern(100)).is_match(&raw),
                UserName::parse(&raw).is_ok(),
                "{:?}", raw
            );
        }

        #[test]
        fn the_coupon_code_pattern_accepts_exactly_what_the_domain_accepts(raw in strings(8)) {
            prop_assert_eq!(
                re(COUPON_CODE_PATTERN).is_match(&raw),
                CouponCode::parse(&raw).is_ok(),
                "{:?}", raw
            );
        }
    }

    #[test]
    fn the_name_patterns_count_characters_after_trimming() {
        let pattern = re(&trimmed_text_pattern(200));
        let exact = "n".repeat(200);
        for (raw, ok) in [
            (exact.clone(), true),
            (format!("  \u{b}{exact}\n\u{3000}"), true),
            (format!("{exact}n"), false),
            (format!("a{}b", " ".repeat(198)), true),
            (format!("a{}b", " ".repeat(199)), false),
            ("   ".to_owned(), false),
            (String::new(), false),
        ] {
            assert_eq!(pattern.is_match(&raw), ok, "{raw:?}");
            assert_eq!(ProductName::parse(&raw).is_ok(), ok, "{raw:?}");
        }
        let users = re(&trimmed_text_pattern(100));
        assert!(users.is_match(&"u".repeat(100)));
        assert!(!users.is_match(&"u".repeat(101)));
    }

    /// Whether the importer takes `body`'s header: its first row that is
    /// not blank has a `code` column.
    fn importer_takes(body: &str) -> bool {
        use application::coupon::{CodeRows, CsvRow};
        let mut rows = CodeRows::new();
        let mut input = body.as_bytes();
        while let Some(row) = rows.next_row(&mut input) {
            if let CsvRow::Header { code_column } = row {
                return code_column.is_some();
            }
        }
        while let Some(row) = rows.finish() {
            if let CsvRow::Header { code_column } = row {
                return code_column.is_some();
            }
        }
        false
    }

    #[test]
    fn the_csv_header_pattern_describes_the_importers_header_rule() {
        let pattern = re(&csv_header_pattern());
        for accepted in [
            "code",
            "code\nAAAA\n",
            "CODE\r\nAAAA",
            "\u{feff}code\n",
            "\u{feff}\u{feff}\"code\"\n",
            "\n  \r\n\"Code\"  \nAAAA",
            "\tcode\u{a0}\n",
            "code,note\nAAAA,x\n",
            "note,code\r\n\"a, b\",AAAA\r\n",
            "\u{feff}\"Note\",\"CODE\",\"when\"\r\n",
            ",,\r\n\" \",\"\"\n\"a\"\"b\nc\",x\"y, code ",
            "code,\"unclosed\nto the end",
            "x,\"code",
            "\" code\n\"\n",
            "\"\"code\r",
            "\"co\"de,x",
            "\r\"code\r",
            "\u{feff}x,code",
            "\u{feff},\u{feff}\"x,code",
        ] {
            assert!(pattern.is_match(accepted), "{accepted:?}");
            assert!(importer_takes(accepted), "{accepted:?}");
        }
        for refused in [
            "",
            "\n\n",
            "codes\nAAAA",
            "AAAA\ncode",
            "note\ncode",
            "\"code\ncode",
            " c ode",
            "x,\"a,code\"",
            "\"\"code\"\"",
            " \"code\"",
            "\"code\"x",
            "\"co\"d\"e\"",
            "\r\u{feff}\"code\r",
            "\u{feff}\",code",
            "\u{feff} \u{feff}\"code\"",
        ] {
            assert!(!pattern.is_match(refused), "{refused:?}");
            assert!(!importer_takes(refused), "{refused:?}");
        }
    }

    /// Pieces of CSV bodies: cells, quotes, separators, line ends, marks
    /// and white space, and the header word in two cases.
    const CSV_PIECES: &[&str] = &[
        "code", "Code", "x", ",", "\"", "\"\"", "\r", "\n", "\r\n", " ", "\t", "\u{a0}", "\u{85}",
        "\u{feff}", "\u{2028}", "é",
    ];

    /// The CSV header pattern, compiled once (it is long).
    static CSV_HEADER: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| re(&csv_header_pattern()));

    proptest! {
        #[test]
        fn the_csv_header_pattern_accepts_exactly_what_the_importer_takes(
            pieces in prop::collection::vec(prop::sample::select(CSV_PIECES), 0..=14)
        ) {
            let body: String = pieces.concat();
            prop_assert_eq!(
                CSV_HEADER.is_match(&body),
                importer_takes(&body),
                "{:?}", body
            );
        }
    }

    #[test]
    fn the_cursor_pattern_admits_only_what_the_handler_reads() {
        let pattern = re(EXPIRING_CURSOR_PATTERN);
        assert!(pattern.is_match("1767225600000000.42"));
        assert!(pattern.is_match("999999999999999999.999999999999999999"));
        for refused in ["", "1", "1.", ".1", "-1.1", "1.-1", "+1.1", "1.1.1", "1 .1"] {
            assert!(!pattern.is_match(refused), "{refused:?}");
        }
    }

    fn server_reads(instant: &str) -> bool {
        serde_json::from_value::<chrono::DateTime<chrono::Utc>>(serde_json::json!(instant)).is_ok()
    }

    proptest! {
        /// Every instant, written as RFC 3339 in any of its spellings,
        /// matches the pattern and is read by the server.
        #[test]
        fn every_rfc3339_instant_matches_the_instant_pattern_and_is_read(
            seconds in -62_135_596_800_i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59),
            digits in prop::sample::select(vec![
                chrono::SecondsFormat::Secs,
                chrono::SecondsFormat::Millis,
                chrono::SecondsFormat::Nanos,
            ]),
            zulu in any::<bool>(),
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).expect("an offset");
            let instant = chrono::DateTime::from_timestamp(seconds, nanos)
                .expect("an instant")
                .with_timezone(&offset);
            let text = if offset_minutes == 0 && zulu {
                instant.to_utc().to_rfc3339_opts(digits, true)
            } else {
                instant.to_rfc3339_opts(digits, false)
            };
            prop_assert!(re(INSTANT_PATTERN).is_match(&text), "{}", text);
            prop_assert!(server_reads(&text), "{}", text);
        }
    }

    #[test]
    fn the_instant_pattern_refuses_what_is_not_an_rfc3339_instant() {
        let pattern = re(INSTANT_PATTERN);
        for read in [
            "2026-12-01T00:00:00Z",
            "2026-12-01t23:59:59.123456789z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2026-02-28T12:00:00.5+09:00",
        ] {
            assert!(pattern.is_match(read), "{read}");
            assert!(server_reads(read), "{read}");
        }
        // Each is refused by the server too; the document says so now.
        for refused in [
            "",
            "2026-12-01",
            "2026-12-01T00:00Z",
            "2026-12-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-12-00T00:00:00Z",
            "2026-12-32T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:60:00Z",
            "2026-12-01T00:00:00.Z",
            "2026-12-01T00:00:00+24:00",
            "2026-12-01T00:00:00+0900",
            "2026-12-01T00:00:00Z ",
            "+12026-12-01T00:00:00Z",
        ] {
            assert!(!pattern.is_match(refused), "{refused}");
        }
        for refused in [
            "",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
        ] {
            assert!(!server_reads(refused), "{refused}");
        }
        // What `format: date-time` rules out and the pattern cannot: a day
        // the month lacks.
        assert!(pattern.is_match("2026-02-30T00:00:00Z"));
        assert!(!server_reads("2026-02-30T00:00:00Z"));
    }
}
