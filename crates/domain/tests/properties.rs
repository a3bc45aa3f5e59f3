//! Property-based tests of the domain's value types.
//!
//! Each property is a rule a client can see: an input is accepted exactly
//! when the documented rule (API.md, or the type's own doc where API.md says
//! nothing) accepts it, and arithmetic on money never wraps, panics or goes
//! negative. The generators lean on the edges: lengths either side of each
//! limit, numbers next to each bound and next to `i64::MAX`, and characters
//! that look right but are not (non-ASCII letters, full-width forms, spaces
//! of every kind, control characters).
//!
//! Failures are not persisted (`failure_persistence: None`), so a run never
//! writes a `proptest-regressions` folder into the tree; a failing case is
//! printed, shrunk, and belongs in a unit test next to the fix. The case
//! count is proptest's default (256, or `PROPTEST_CASES`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::string::string_regex;
use proptest::test_runner::Config;

use domain::catalog::{POPULAR_LIMIT, Product, ProductId, ProductName, ProductSales, Stock, rank};
use domain::coupon::{CampaignName, CodeCount, DiscountKind, DiscountRule, IssueWindow, ValidDays};
use domain::idempotency::IdempotencyKey;
use domain::identity::{LoginId, Password, UserName};
use domain::invest::{
    InvestAmount, InvestError, InvestProduct, InvestProductId, InvestStatus, InvestTitle,
    RecruitingWindow,
};
use domain::money::Points;
use domain::ordering::{
    CouponCode, InvalidOrderRequest, OrderRequest, PlaceOrderError, Quantity, price_lines, total_of,
};
use domain::paging::{PageRequest, PageRequestError};
use domain::points::{ChargeAmount, InvalidChargeAmount, MAX_BALANCE};

fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- generators

/// Strings matching a regex; the patterns below are constants.
fn regex(pattern: &str) -> BoxedStrategy<String> {
    string_regex(pattern)
        .unwrap_or_else(|e| panic!("bad test regex {pattern:?}: {e}"))
        .boxed()
}

/// Integers within `spread` of one of `edges`, saturating at the `i64` ends.
fn near(edges: &'static [i64], spread: i64) -> impl Strategy<Value = i64> {
    select(edges).prop_flat_map(move |e| e.saturating_sub(spread)..=e.saturating_add(spread))
}

/// Any `i64`, weighted towards zero and both ends.
fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        near(&[0, i64::MIN, i64::MAX, i64::MAX / 2, -(i64::MAX / 2)], 3),
    ]
}

/// A non-negative `i64`, weighted towards zero, the balance cap, half of
/// `i64::MAX` (where sums overflow) and `i64::MAX`.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        0..=i64::MAX,
        0i64..=3,
        0i64..=10_000_000,
        near(&[100_000_000, i64::MAX / 2, i64::MAX], 3).prop_filter("non-negative", |v| *v >= 0),
    ]
}

fn pts(v: i64) -> Points {
    Points::new(v).unwrap_or_else(|| panic!("{v} is not a valid amount"))
}

/// Characters that trip validators: look-alikes of valid ones, whitespace of
/// every kind, control characters, multi-byte letters, emoji.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        select(vec![
            ' ', '\t', '\n', '\r', '\0', '\u{7f}', '\u{85}', '\u{a0}', '\u{3000}', '\u{200b}',
            '\u{feff}', '\u{2028}', 'é', 'ß', 'İ', 'ı', 'Å', 'Ａ', '１', '－', '가', '😀', '/',
            '+', '_', '.', '-', '~', '!', '"', 'a', 'Z', '0', '9',
        ]),
        any::<char>(),
        proptest::char::range(' ', '~'),
    ]
}

fn tricky_string(max_len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..=max_len).prop_map(String::from_iter)
}

/// Candidates for a "`min..=max` characters of `class`" rule: strings of the
/// alphabet with lengths around both limits, valid strings with one foreign
/// character slipped in or a space around them, and anything at all.
fn candidates(class: &'static str, min: usize, max: usize) -> impl Strategy<Value = String> {
    let lo = min.saturating_sub(2);
    prop_oneof![
        regex(&format!("{class}{{{lo},{}}}", min + 2)),
        regex(&format!("{class}{{{},{}}}", max - 2, max + 2)),
        regex(&format!("{class}{{0,{}}}", max + 5)),
        (
            regex(&format!("{class}{{{min},{max}}}")),
            tricky_char(),
            any::<Index>()
        )
            .prop_map(|(s, c, at)| {
                let mut chars: Vec<char> = s.chars().collect();
                chars.insert(at.index(chars.len() + 1), c);
                chars.into_iter().collect()
            }),
        regex(&format!("{class}{{{min},{max}}}")).prop_map(|s| format!(" {s}")),
        regex(&format!("{class}{{{min},{max}}}")).prop_map(|s| format!("{s}\n")),
        tricky_string(max + 5),
        any::<String>(),
    ]
}

/// Whitespace a user may leave around a name.
fn padding() -> impl Strategy<Value = String> {
    proptest::collection::vec(select(vec![' ', '\t', '\n', '\u{a0}', '\u{3000}']), 0..=3)
        .prop_map(String::from_iter)
}

/// Candidates for a trimmed "1..=`max` characters, no control characters"
/// name: Korean and Latin text of lengths around the limit, padded with
/// whitespace, blank strings, and anything at all.
fn name_candidates(max: usize) -> impl Strategy<Value = String> {
    // Text of max-2..=max+2 characters that trimming leaves alone (no
    // whitespace at either end), so the limit itself is what decides.
    let at_limit = regex(&format!(
        "[가-힣a-zA-Z0-9][가-힣a-zA-Z0-9 ]{{{},{}}}[가-힣a-zA-Z0-9]",
        max - 4,
        max
    ));
    let other = prop_oneof![
        regex("[가-힣a-z ]{0,5}"),
        tricky_string(12),
        tricky_string(max + 3),
    ];
    prop_oneof![
        3 => (padding(), at_limit, padding()).prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        2 => (padding(), other, padding()).prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        1 => padding(),
        1 => any::<String>(),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 to 2100, to the nanosecond.
    (0i64..=4_102_444_800, 0u32..1_000_000_000).prop_map(|(s, n)| {
        DateTime::from_timestamp(s, n).unwrap_or_else(|| panic!("{s}.{n} is in range"))
    })
}

/// Two instants: unrelated, or a few nanoseconds or seconds apart either way.
fn two_instants() -> impl Strategy<Value = (DateTime<Utc>, DateTime<Utc>)> {
    prop_oneof![
        (instant(), instant()),
        (instant(), -2i64..=2).prop_map(|(a, d)| (a, a + TimeDelta::nanoseconds(d))),
        (instant(), -2i64..=2).prop_map(|(a, d)| (a, a + TimeDelta::seconds(d))),
    ]
}

/// A moment next to `start` or `end` (a nanosecond either side), or anywhere.
fn moment_near(start: DateTime<Utc>, end: DateTime<Utc>) -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (select(vec![start, end]), -1i64..=1).prop_map(|(t, d)| t + TimeDelta::nanoseconds(d)),
        instant(),
    ]
}

/// A catalogue (id -> price) and an order request (id -> quantity) over
/// it: mostly products that exist, sometimes one that does not, at any place
/// in id order. Prices lean towards amounts whose lines or sums overflow.
fn catalogue_and_request() -> impl Strategy<Value = (BTreeMap<i64, i64>, BTreeMap<i64, i64>)> {
    let price = prop_oneof![
        0i64..=100_000,
        near(&[i64::MAX / 1_000, i64::MAX / 8, i64::MAX / 2], 2),
        0..=i64::MAX,
    ];
    let quantity = prop_oneof![1i64..=3, 998i64..=1_000, 1i64..=1_000];
    proptest::collection::btree_map(1i64..=12, price, 0..=8)
        .prop_flat_map(|catalogue| {
            let ids: Vec<i64> = catalogue.keys().copied().collect();
            let known = ids.len();
            let picked = proptest::sample::subsequence(ids, 0..=known);
            let unknown = prop_oneof![2 => Just(None), 1 => (0i64..=13).prop_map(Some)];
            (Just(catalogue), picked, unknown)
        })
        .prop_filter("at least one item", |(_, picked, unknown)| {
            !picked.is_empty() || unknown.is_some()
        })
        .prop_flat_map(move |(catalogue, picked, unknown)| {
            let ids: Vec<i64> = picked.into_iter().chain(unknown).collect();
            let quantities = proptest::collection::vec(quantity.clone(), ids.len());
            (Just(catalogue), Just(ids), quantities)
        })
        .prop_map(|(catalogue, ids, quantities)| {
            (catalogue, ids.into_iter().zip(quantities).collect())
        })
}

// ---------------------------------------------------------------- oracles

/// `min..=max` characters (not bytes), each accepted by `ok`.
fn chars_rule(s: &str, min: usize, max: usize, ok: impl Fn(char) -> bool) -> bool {
    (min..=max).contains(&s.chars().count()) && s.chars().all(ok)
}

/// The trimmed-name rule: what is left after stripping surrounding
/// whitespace, when that is 1..=`max` characters with no control character.
fn trimmed_name(raw: &str, max: usize) -> Option<&str> {
    let t = raw.trim_matches(char::is_whitespace);
    let n = t.chars().count();
    ((1..=max).contains(&n) && !t.chars().any(char::is_control)).then_some(t)
}

fn fits_i64(v: i128) -> Option<i64> {
    i64::try_from(v).ok()
}

proptest! {
    #![proptest_config(config())]

    // ------------------------------------------------------------ money

    #[test]
    fn points_exist_exactly_for_non_negative_values(v in edgy_i64()) {
        let p = Points::new(v);
        prop_assert_eq!(p.is_some(), v >= 0);
        if let Some(p) = p {
            prop_assert_eq!(p.get(), v);
            prop_assert_eq!(p.to_string(), v.to_string());
        }
    }

    #[test]
    fn points_addition_agrees_with_wide_arithmetic(a in amount(), b in amount()) {
        let expected = fits_i64(i128::from(a) + i128::from(b));
        let got = pts(a).checked_add(pts(b)).map(Points::get);
        prop_assert_eq!(got, expected, "{} + {}", a, b);
        prop_assert_eq!(pts(b).checked_add(pts(a)).map(Points::get), expected, "commutes");
    }

    #[test]
    fn points_subtraction_never_goes_negative(a in amount(), b in prop_oneof![amount(), Just(0)]) {
        let got = pts(a).checked_sub(pts(b)).map(Points::get);
        let expected = (a >= b).then(|| a - b);
        prop_assert_eq!(got, expected, "{} - {}", a, b);
    }

    #[test]
    fn points_multiplication_agrees_with_wide_arithmetic(
        (a, factor) in prop_oneof![
            (amount(), edgy_i64()),
            (amount(), -3i64..=1_003),
            // Products right at the i64::MAX boundary.
            (1i64..=1_000, -2i64..=2).prop_map(|(a, d)| (a, (i64::MAX / a).saturating_add(d))),
            (0i64..=0, edgy_i64()),
        ]
    ) {
        let wide = i128::from(a) * i128::from(factor);
        let expected = fits_i64(wide).filter(|v| *v >= 0);
        let got = pts(a).checked_mul(factor).map(Points::get);
        prop_assert_eq!(got, expected, "{} * {}", a, factor);
    }

    #[test]
    fn a_charge_is_one_thousand_to_one_million(
        v in prop_oneof![near(&[1_000, 1_000_000, 0], 3), edgy_i64(), 0i64..=2_000_000]
    ) {
        let charge = ChargeAmount::new(v);
        prop_assert_eq!(charge.is_ok(), (1_000..=1_000_000).contains(&v), "{}", v);
        match charge {
            Ok(c) => {
                prop_assert_eq!(c.points().get(), v);
                // Any balance the cap allows takes any valid charge without
                // overflow, so only the cap itself can refuse it.
                prop_assert!(MAX_BALANCE.checked_add(c.points()).is_some());
            }
            Err(e) => prop_assert_eq!(e, InvalidChargeAmount { min: 1_000, max: 1_000_000 }),
        }
    }

    // ------------------------------------------------------------ quantities and orders

    #[test]
    fn a_quantity_is_one_to_a_thousand(v in prop_oneof![near(&[0, 1, 1_000], 2), edgy_i64()]) {
        let q = Quantity::new(v);
        prop_assert_eq!(q.is_some(), (1..=1_000).contains(&v), "{}", v);
        if let Some(q) = q {
            prop_assert_eq!(q.get(), v);
        }
    }

    #[test]
    fn an_order_is_one_to_fifty_distinct_products(
        ids in prop_oneof![
            // Distinct ids, around the limit, in any order.
            proptest::collection::btree_set(any::<i64>(), 0..=53)
                .prop_map(Vec::from_iter)
                .prop_shuffle(),
            // Distinct ids and then one of them again.
            (proptest::collection::btree_set(-5i64..=500, 1..=50), any::<Index>(), any::<Index>())
                .prop_map(|(set, pick, at)| {
                    let mut ids: Vec<i64> = set.into_iter().collect();
                    let again = ids[pick.index(ids.len())];
                    ids.insert(at.index(ids.len() + 1), again);
                    ids
                })
                .prop_shuffle(),
            // Few possible ids: duplicates everywhere.
            proptest::collection::vec(1i64..=60, 0..=55),
        ],
        quantity in 1i64..=1_000,
    ) {
        let q = Quantity::new(quantity).unwrap_or_else(|| panic!("{quantity} is valid"));
        let lines: Vec<(ProductId, Quantity)> =
            ids.iter().map(|id| (ProductId::new(*id), q)).collect();

        let mut seen = BTreeSet::new();
        let first_duplicate = ids.iter().copied().find(|id| !seen.insert(*id));
        let expected = if ids.is_empty() {
            Err(InvalidOrderRequest::Empty)
        } else if ids.len() > 50 {
            Err(InvalidOrderRequest::TooManyItems { max: 50 })
        } else if let Some(id) = first_duplicate {
            Err(InvalidOrderRequest::DuplicateProduct(ProductId::new(id)))
        } else {
            let mut sorted = lines.clone();
            sorted.sort_by_key(|(id, _)| *id);
            Ok(sorted)
        };
        let got = OrderRequest::new(lines).map(|r| r.lines().to_vec());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn order_prices_agree_with_wide_arithmetic_and_never_wrap(
        (catalogue, request) in catalogue_and_request(),
    ) {
        let products: Vec<Product> = catalogue
            .iter()
            .map(|(id, price)| Product {
                id: ProductId::new(*id),
                name: ProductName::parse(&format!("p{id}")).unwrap_or_else(|e| panic!("{e}")),
                price: pts(*price),
                stock: Stock::new(0).unwrap_or_else(|e| panic!("{e}")),
                version: Default::default(),
            })
            .collect();
        let order = OrderRequest::new(
            request
                .iter()
                .map(|(id, q)| {
                    (ProductId::new(*id), Quantity::new(*q).unwrap_or_else(|| panic!("{q}")))
                })
                .collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"));

        // The model: lines in id order, the first unknown product or the
        // first overflow wins; then the sum, which may overflow too.
        let mut expected_lines = Vec::new();
        let mut failure = None;
        for (id, q) in &request {
            let Some(price) = catalogue.get(id) else {
                let product_id = ProductId::new(*id);
                failure = Some(PlaceOrderError::ProductNotFound { product_id });
                break;
            };
            let Some(line) = fits_i64(i128::from(*price) * i128::from(*q)) else {
                failure = Some(PlaceOrderError::TotalTooLarge);
                break;
            };
            expected_lines.push((*id, *price, *q, line));
        }

        match (price_lines(&order, &products), failure) {
            (Err(got), Some(want)) => prop_assert_eq!(got, want),
            (Ok(lines), None) => {
                let got: Vec<(i64, i64, i64, i64)> = lines
                    .iter()
                    .map(|l| {
                        let id = l.product_id.get();
                        (id, l.unit_price.get(), l.quantity.get(), l.line_total.get())
                    })
                    .collect();
                prop_assert_eq!(&got, &expected_lines);
                let sum: i128 = expected_lines.iter().map(|l| i128::from(l.3)).sum();
                let expected_total = fits_i64(sum).ok_or(PlaceOrderError::TotalTooLarge);
                prop_assert_eq!(total_of(&lines).map(Points::get), expected_total);
            }
            (got, want) => {
                let why = format!("priced {got:?}, expected failure {want:?}");
                return Err(TestCaseError::fail(why));
            }
        }
    }

    // ------------------------------------------------------------ codes, ids, keys, passwords

    #[test]
    fn a_coupon_code_is_four_to_sixty_four_of_letters_digits_and_dashes_in_any_case(
        s in prop_oneof![candidates("[A-Z0-9-]", 4, 64), candidates("[A-Za-z0-9_-]", 4, 64)]
    ) {
        let rule = chars_rule(&s, 4, 64, |c| c.is_ascii_alphanumeric() || c == '-');
        let parsed = CouponCode::parse(&s);
        prop_assert_eq!(parsed.is_ok(), rule, "{:?}", s);
        if let Ok(code) = parsed {
            // Held in upper case: the same code whatever case it came in.
            prop_assert_eq!(code.as_str(), s.to_ascii_uppercase());
            prop_assert_eq!(CouponCode::parse(&s.to_ascii_lowercase()), Ok(code.clone()));
            prop_assert_eq!(CouponCode::parse(code.as_str()), Ok(code));
        }
    }

    #[test]
    fn every_generated_code_is_a_valid_coupon_code(s in regex("[0-9A-HJKMNP-TV-Z]{16}")) {
        // Generated codes are 16 characters of Crockford base32: the parser
        // (and so `use`, `cancel-use` and the CSV import) accepts every one.
        prop_assert_eq!(CouponCode::parse(&s).map(|c| c.as_str().to_owned()), Ok(s));
    }

    #[test]
    fn a_login_id_is_three_to_sixty_four_of_the_documented_alphabet(
        s in candidates("[A-Za-z0-9_.-]", 3, 64)
    ) {
        let rule = chars_rule(&s, 3, 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
        });
        let parsed = LoginId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), rule, "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(id.to_string(), s);
            prop_assert_eq!(LoginId::parse(id.as_str()), Ok(id));
        }
    }

    #[test]
    fn a_password_is_eight_to_one_twenty_eight_characters_not_bytes(
        s in prop_oneof![
            candidates("[가-힣]", 8, 128),
            candidates("[\\PC]", 8, 128),
            candidates("[ -~]", 8, 128),
            proptest::collection::vec(tricky_char(), 6..=10).prop_map(String::from_iter),
            proptest::collection::vec(tricky_char(), 126..=130).prop_map(String::from_iter),
        ]
    ) {
        let rule = (8..=128).contains(&s.chars().count());
        let parsed = Password::parse(&s);
        prop_assert_eq!(parsed.is_ok(), rule, "{} chars, {} bytes", s.chars().count(), s.len());
        if let Ok(p) = parsed {
            // Kept exactly as typed (spaces are part of a password) ...
            prop_assert_eq!(p.expose(), s.as_str());
            // ... and never shown by Debug, so it cannot reach a log line.
            prop_assert_eq!(format!("{p:?}"), "Password(***)");
        }
    }

    #[test]
    fn an_idempotency_key_is_one_to_one_twenty_eight_visible_ascii(
        s in candidates("[!-~]", 1, 128)
    ) {
        let rule = chars_rule(&s, 1, 128, |c| ('!'..='~').contains(&c));
        let parsed = IdempotencyKey::parse(&s);
        prop_assert_eq!(parsed.is_ok(), rule, "{:?}", s);
        if let Ok(key) = parsed {
            prop_assert_eq!(key.as_str(), s.as_str());
        }
    }

    // ------------------------------------------------------------ names

    #[test]
    fn names_are_trimmed_and_one_to_their_limit_of_characters(
        s in prop_oneof![name_candidates(200), name_candidates(100)]
    ) {
        // Product names (API.md: 1..=200 chars), campaign names and invest
        // titles (200) and user names (100) share one rule: surrounding
        // whitespace is dropped, then 1..=max characters, none a control
        // character. Whatever is accepted is stored trimmed and is accepted
        // again unchanged when sent back (a PATCH of the same name).
        let check = |got: Option<&str>, max: usize| -> Result<(), TestCaseError> {
            prop_assert_eq!(got, trimmed_name(&s, max), "max {} for {:?}", max, s);
            Ok(())
        };
        let product = ProductName::parse(&s);
        check(product.as_ref().ok().map(ProductName::as_str), 200)?;
        check(CampaignName::parse(&s).as_ref().ok().map(CampaignName::as_str), 200)?;
        check(InvestTitle::parse(&s).as_ref().ok().map(InvestTitle::as_str), 200)?;
        check(UserName::parse(&s).as_ref().ok().map(UserName::as_str), 100)?;
        if let Ok(name) = product {
            prop_assert_eq!(ProductName::parse(name.as_str()), Ok(name));
        }
    }

    // ------------------------------------------------------------ paging

    #[test]
    fn a_page_size_is_one_to_a_hundred(
        page in prop_oneof![
            Just(None),
            (0u32..=3).prop_map(Some),
            (999_998u32..=1_000_002).prop_map(Some),
            any::<u32>().prop_map(Some),
        ],
        size in prop_oneof![
            Just(None),
            (0u32..=2).prop_map(Some),
            (99u32..=101).prop_map(Some),
            any::<u32>().prop_map(Some),
        ],
    ) {
        let (p, s) = (page.unwrap_or(0), size.unwrap_or(20));
        let expected = if !(1..=100).contains(&s) {
            Err(PageRequestError::Size { max: 100 })
        } else if p > PageRequest::MAX_PAGE {
            Err(PageRequestError::Page)
        } else {
            Ok((p, s, i64::from(p) * i64::from(s), i64::from(s)))
        };
        let got = PageRequest::new(page, size).map(|r| (r.page(), r.size(), r.offset(), r.limit()));
        prop_assert_eq!(got, expected);
    }

    // ------------------------------------------------------------ investments

    #[test]
    fn an_invest_amount_is_at_least_one(
        v in prop_oneof![near(&[0, 1, InvestAmount::MAX], 2), edgy_i64()]
    ) {
        // API.md: amount >= 1. The type also caps it at 10^12 (no product's
        // target can be larger, and the gate's Lua counts in doubles).
        let a = InvestAmount::new(v);
        prop_assert_eq!(a.is_ok(), (1..=InvestAmount::MAX).contains(&v), "{}", v);
        if let Ok(a) = a {
            prop_assert_eq!(a.get(), v);
            prop_assert_eq!(a.points().get(), v);
        }
    }

    #[test]
    fn a_recruiting_window_starts_before_it_ends_and_includes_both_ends(
        ((start, end), now) in two_instants()
            .prop_flat_map(|(s, e)| (Just((s, e)), moment_near(s, e)))
    ) {
        let window = RecruitingWindow::new(start, end);
        prop_assert_eq!(window.is_ok(), start < end);
        match window {
            Ok(w) => {
                prop_assert_eq!((w.started_at(), w.finished_at()), (start, end));
                prop_assert_eq!(w.is_open(now), start <= now && now <= end);
            }
            Err(e) => prop_assert_eq!(e.field, "finishedAt"),
        }
    }

    #[test]
    fn an_investment_is_admitted_only_in_the_window_and_never_past_the_target(
        (total, current, amount) in (near(&[1, 2, 1_000_000, InvestAmount::MAX], 1)
                .prop_filter("a valid target", |t| (1..=InvestAmount::MAX).contains(t)))
            .prop_flat_map(|total| {
                let current = prop_oneof![Just(0), Just(total), Just(total - 1), 0..=total];
                (Just(total), current)
            })
            .prop_flat_map(|(total, current)| {
                let left = total - current;
                let amount = prop_oneof![
                    (left - 1..=left + 1)
                        .prop_filter("a valid amount", |a| (1..=InvestAmount::MAX).contains(a)),
                    1..=InvestAmount::MAX,
                ];
                (Just(total), Just(current), amount)
            }),
        ((start, end), now) in two_instants()
            .prop_filter("a valid window", |(s, e)| s < e)
            .prop_flat_map(|(s, e)| (Just((s, e)), moment_near(s, e))),
    ) {
        let id = InvestProductId::new(7);
        let product = InvestProduct {
            id,
            title: InvestTitle::parse("Solar farm").unwrap_or_else(|e| panic!("{e}")),
            total: pts(total),
            current: pts(current),
            investors: 0,
            window: RecruitingWindow::new(start, end).unwrap_or_else(|e| panic!("{e}")),
        };
        let left = total - current;
        prop_assert_eq!(product.remaining().get(), left);
        prop_assert_eq!(product.status() == InvestStatus::Complete, left == 0);

        let amount = InvestAmount::new(amount).unwrap_or_else(|e| panic!("{e}"));
        let expected = if !(start <= now && now <= end) {
            Err(InvestError::NotInRecruitingPeriod { product_id: id })
        } else if left == 0 {
            Err(InvestError::SoldOut { product_id: id })
        } else if amount.get() > left {
            Err(InvestError::AmountExceedsRemaining { product_id: id, remaining: pts(left) })
        } else {
            Ok(())
        };
        let got = product.admit(amount, now);
        prop_assert_eq!(&got, &expected);
        if got.is_ok() {
            prop_assert!(current + amount.get() <= total, "never past the target");
        }
    }

    // ------------------------------------------------------------ coupons and discounts

    #[test]
    fn a_discount_rule_refuses_exactly_the_nonsense(
        percent in any::<bool>(),
        value in prop_oneof![near(&[0, 100], 2), edgy_i64()],
        max in prop_oneof![Just(None), near(&[0, 1], 1).prop_map(Some), edgy_i64().prop_map(Some)],
        min_order in prop_oneof![near(&[0], 2), edgy_i64()],
    ) {
        let kind = if percent { DiscountKind::Percent } else { DiscountKind::Amount };
        let expected_field = if value <= 0 || (percent && value > 100) {
            Some("discountValue")
        } else if max.is_some_and(|m| m <= 0) {
            Some("maxDiscountAmount")
        } else if min_order < 0 {
            Some("minOrderAmount")
        } else {
            None
        };
        let rule = DiscountRule::new(kind, value, max, min_order);
        prop_assert_eq!(rule.as_ref().err().map(|e| e.field), expected_field);
        if let Ok(rule) = rule {
            prop_assert_eq!(
                (rule.kind(), rule.value(), rule.max().map(Points::get), rule.min_order().get()),
                (kind, value, max, min_order)
            );
        }
    }

    #[test]
    fn a_discount_is_never_negative_never_over_the_total_and_rounds_down(
        rule in (
            any::<bool>(),
            prop_oneof![1i64..=100, near(&[1, 100], 0), 1..=i64::MAX],
            prop_oneof![Just(None), (1i64..=100_000).prop_map(Some), (1..=i64::MAX).prop_map(Some)],
            prop_oneof![Just(0i64), 0i64..=100_000, 0..=i64::MAX],
        )
            .prop_filter_map("a valid rule", |(percent, value, max, min_order)| {
                let kind = if percent { DiscountKind::Percent } else { DiscountKind::Amount };
                DiscountRule::new(kind, value, max, min_order).ok()
            }),
        total in prop_oneof![amount(), 0i64..=1_000, near(&[99, 100, 101, 9_999, 10_000], 1)],
    ) {
        let discount = rule.discount_for(pts(total));
        if total < rule.min_order().get() {
            prop_assert_eq!(discount, None, "below the minimum order");
            return Ok(());
        }
        let Some(discount) = discount else {
            return Err(TestCaseError::fail(format!("no discount on {total} for {rule:?}")));
        };
        let d = discount.get();
        prop_assert!(d >= 0 && d <= total, "{} off {}", d, total);
        if let Some(max) = rule.max() {
            prop_assert!(d <= max.get(), "{} over the cap {}", d, max);
        }
        let raw = match rule.kind() {
            DiscountKind::Amount => i128::from(rule.value()),
            // The percentage of the total, rounded down (floor; all non-negative).
            DiscountKind::Percent => i128::from(total) * i128::from(rule.value()) / 100,
        };
        let cap = rule.max().map_or(i128::MAX, |m| i128::from(m.get()));
        let expected = raw.min(cap).min(i128::from(total));
        prop_assert_eq!(i128::from(d), expected);
        // And so what is paid is never negative either.
        prop_assert_eq!(pts(total).checked_sub(discount).map(Points::get), Some(total - d));
    }

    #[test]
    fn an_issue_window_is_half_open_and_never_empty(
        ((start, end), now) in two_instants()
            .prop_flat_map(|(s, e)| (Just((s, e)), moment_near(s, e))),
        open_start in any::<bool>(),
        open_end in any::<bool>(),
    ) {
        let starts_at = (!open_start).then_some(start);
        let ends_at = (!open_end).then_some(end);
        let window = IssueWindow::new(starts_at, ends_at);
        prop_assert_eq!(window.is_ok(), open_start || open_end || start < end);
        if let Ok(w) = window {
            let expected = starts_at.is_none_or(|s| s <= now) && ends_at.is_none_or(|e| now < e);
            prop_assert_eq!(w.is_open(now), expected);
        }
    }

    #[test]
    fn valid_days_and_code_counts_are_bounded(
        days in prop_oneof![near(&[0, 1, 3_650, 2_147_483_648], 2), edgy_i64()],
        count in prop_oneof![near(&[0, 1, 1_000_000], 2), edgy_i64()],
        issued_at in instant(),
    ) {
        let valid = ValidDays::new(days);
        prop_assert_eq!(valid.is_ok(), (1..=3_650).contains(&days), "{} days", days);
        if let Ok(v) = valid {
            prop_assert_eq!(i64::from(v.get()), days);
            prop_assert_eq!(v.expiry_from(issued_at) - issued_at, TimeDelta::days(days));
        }
        let c = CodeCount::new(count);
        prop_assert_eq!(c.is_ok(), (1..=1_000_000).contains(&count), "{} codes", count);
        if let Ok(c) = c {
            prop_assert_eq!(i64::try_from(c.get()).ok(), Some(count));
        }
    }

    // ------------------------------------------------------------ catalogue

    #[test]
    fn stock_is_never_negative(v in edgy_i64()) {
        let s = Stock::new(v);
        prop_assert_eq!(s.is_ok(), v >= 0);
        if let Ok(s) = s {
            prop_assert_eq!(s.get(), v);
        }
    }

    #[test]
    fn popular_is_most_sold_first_ties_by_lower_id_and_only_what_sold(
        sales in proptest::collection::btree_map(1i64..=40, -2i64..=6, 0..=15)
            .prop_map(Vec::from_iter)
            .prop_shuffle(),
        limit in prop_oneof![Just(POPULAR_LIMIT), 0usize..=8],
    ) {
        let input: Vec<ProductSales> = sales
            .iter()
            .map(|(id, sold)| ProductSales { product_id: ProductId::new(*id), sold: *sold })
            .collect();
        let ranked = rank(input, limit);
        let key = |s: &ProductSales| (-s.sold, s.product_id);
        let sold_any = sales.iter().filter(|(_, sold)| *sold > 0).count();
        prop_assert_eq!(ranked.len(), sold_any.min(limit));
        prop_assert!(ranked.iter().all(|s| s.sold > 0), "only products that sold");
        prop_assert!(ranked.windows(2).all(|w| key(&w[0]) < key(&w[1])), "ordered: {:?}", ranked);
        if let Some(last) = ranked.last() {
            // Nothing left out sold more (or as much with a lower id).
            let kept: BTreeSet<ProductId> = ranked.iter().map(|s| s.product_id).collect();
            for (id, sold) in &sales {
                let s = ProductSales { product_id: ProductId::new(*id), sold: *sold };
                if *sold > 0 && !kept.contains(&s.product_id) {
                    prop_assert!(key(last) < key(&s), "{:?} left out for {:?}", s, last);
                }
            }
        }
    }
}

/// One character decides acceptance only through the alphabet: checked for
/// every Unicode scalar value, not a sample, since a single stray character
/// (say `+` in a login id) is a needle random strings rarely find.
#[test]
fn every_character_is_judged_by_the_documented_alphabet() {
    let mut wrong = Vec::new();
    for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
        let coupon = c.is_ascii_alphanumeric() || c == '-';
        if CouponCode::parse(&format!("AB{c}9")).is_ok() != coupon {
            wrong.push(("coupon code", c));
        }
        let login = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if LoginId::parse(&format!("ab{c}")).is_ok() != login {
            wrong.push(("login id", c));
        }
        let visible = ('!'..='~').contains(&c);
        if IdempotencyKey::parse(&format!("k{c}")).is_ok() != visible {
            wrong.push(("idempotency key", c));
        }
        // Any character is one of a password's 8: none is counted as more.
        if Password::parse(&format!("1234567{c}")).is_err() {
            wrong.push(("password", c));
        }
        let name = format!("a{c}b");
        if ProductName::parse(&name).map(|n| n.as_str() == name) != Ok(true) && !c.is_control() {
            wrong.push(("product name", c));
        }
        if c.is_control() && ProductName::parse(&name).is_ok() {
            wrong.push(("product name with a control character", c));
        }
    }
    assert!(
        wrong.is_empty(),
        "judged wrongly: {:?}",
        &wrong[..wrong.len().min(20)]
    );
}
