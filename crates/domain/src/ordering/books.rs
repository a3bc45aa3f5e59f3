//! The decision of an order batch: which orders are taken, against the stock,
//! balances and coupons the batch has locked.
//!
//! The order store locks the rows named by [`RowsToLock`], loads them into
//! [`Books`] and calls [`Books::take`] for each order in arrival order. The
//! rules are those of one order placed with guarded `UPDATE`s, in the same
//! refusal order: every line's stock (in product-id order), then the balance,
//! then the coupon. An order is taken whole or refused and changes nothing;
//! later orders see what earlier ones took. The store then writes what was
//! taken under the same guards in SQL, so a bug here cannot oversell or
//! overdraw. Pure, so every rule is unit-tested without a database.

use std::collections::{BTreeSet, HashMap};

use super::models::{CouponCode, PlaceOrderError, PricedOrder};
use crate::catalog::{ProductId, Stock};
use crate::identity::UserId;
use crate::money::Points;

/// The rows a batch of orders is decided against, each kind sorted (the
/// order the store locks them in, so two batches never wait in a cycle).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowsToLock {
    /// Every product of every line.
    pub products: Vec<ProductId>,
    /// The users who pay something: an order paid in full by its coupon
    /// needs no wallet.
    pub payers: Vec<UserId>,
    /// Every coupon an order names.
    pub coupons: Vec<CouponCode>,
}

impl RowsToLock {
    /// The rows `orders` are decided against, each listed once.
    pub fn of<'a>(orders: impl IntoIterator<Item = &'a PricedOrder>) -> Self {
        let mut products = BTreeSet::new();
        let mut payers = BTreeSet::new();
        let mut coupons = Vec::new();
        for order in orders {
            products.extend(order.lines.iter().map(|l| l.product_id));
            if order.paid > Points::ZERO {
                payers.insert(order.user_id);
            }
            coupons.extend(order.coupon.iter().cloned());
        }
        coupons.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        coupons.dedup();
        Self {
            products: products.into_iter().collect(),
            payers: payers.into_iter().collect(),
            coupons,
        }
    }
}

/// What taking an order did to its payer's wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The payer's balance after the payment; `None` when nothing was paid
    /// (the wallet was not touched).
    pub balance_after: Option<Points>,
}

/// The locked rows a batch decides against, as they stand after the orders
/// taken so far. A product, wallet or coupon that is not in the books is
/// treated as having nothing: no stock, no balance, not usable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Books {
    stock: HashMap<ProductId, Stock>,
    balances: HashMap<UserId, Points>,
    /// Coupons that are issued, unused and unexpired, with their owner.
    coupons: HashMap<CouponCode, UserId>,
}

impl Books {
    /// Empty books: nothing in stock, no wallets, no usable coupons.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `units` left of `product`.
    pub fn stock(&mut self, product: ProductId, units: Stock) -> &mut Self {
        self.stock.insert(product, units);
        self
    }

    /// Records `user`'s wallet with `balance`.
    pub fn wallet(&mut self, user: UserId, balance: Points) -> &mut Self {
        self.balances.insert(user, balance);
        self
    }

    /// Records a coupon `owner` may still use: issued, unused, unexpired.
    pub fn usable_coupon(&mut self, code: CouponCode, owner: UserId) -> &mut Self {
        self.coupons.insert(code, owner);
        self
    }

    /// Takes `order` whole, or refuses it and changes nothing.
    ///
    /// # Errors
    /// The first refusal in this order, as one order's guarded writes would
    /// give it: [`PlaceOrderError::OutOfStock`] for the first line (in
    /// product-id order) with too few units left,
    /// [`PlaceOrderError::InsufficientBalance`] when the payer's balance is
    /// below what the order pays (or the payer has no wallet), then
    /// [`PlaceOrderError::CouponNotApplicable`] when the coupon is not usable
    /// by the orderer (unknown, another user's, used, expired, or taken by an
    /// earlier order).
    pub fn take(&mut self, order: &PricedOrder) -> Result<Taken, PlaceOrderError> {
        let mut stock_after: HashMap<ProductId, Stock> = HashMap::new();
        for line in &order.lines {
            let id = line.product_id;
            let left = stock_after.get(&id).or_else(|| self.stock.get(&id));
            let after = Stock::new(left.map_or(0, |s| s.get()) - line.quantity.get())
                .map_err(|_| PlaceOrderError::OutOfStock { product_id: id })?;
            stock_after.insert(id, after);
        }
        let balance_after = if order.paid > Points::ZERO {
            let balance = self.balances.get(&order.user_id).copied();
            let after = balance.and_then(|b| b.checked_sub(order.paid));
            Some(after.ok_or(PlaceOrderError::InsufficientBalance)?)
        } else {
            None
        };
        if let Some(code) = &order.coupon
            && self.coupons.get(code) != Some(&order.user_id)
        {
            return Err(PlaceOrderError::CouponNotApplicable);
        }
        // Every check passed: only now is anything taken.
        self.stock.extend(stock_after);
        if let Some(after) = balance_after {
            self.balances.insert(order.user_id, after);
        }
        if let Some(code) = &order.coupon {
            self.coupons.remove(code);
        }
        Ok(Taken { balance_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ProductName;
    use crate::ordering::{OrderLine, Quantity};

    fn order(user: i64, lines: &[(i64, i64)], paid: i64, coupon: Option<&str>) -> PricedOrder {
        let price = Points::new(100).expect("valid");
        PricedOrder {
            user_id: UserId::new(user),
            lines: lines
                .iter()
                .map(|&(id, q)| OrderLine {
                    product_id: ProductId::new(id),
                    name: ProductName::parse("p").expect("valid"),
                    quantity: Quantity::new(q).expect("valid"),
                    unit_price: price,
                    line_total: price.checked_mul(q).expect("small"),
                })
                .collect(),
            total: Points::new(paid).expect("valid"),
            discount: Points::ZERO,
            paid: Points::new(paid).expect("valid"),
            coupon: coupon.map(code),
        }
    }

    fn code(raw: &str) -> CouponCode {
        CouponCode::parse(raw).expect("valid")
    }

    fn points(n: i64) -> Points {
        Points::new(n).expect("valid")
    }

    fn books(stock: &[(i64, i64)], balances: &[(i64, i64)], coupons: &[(&str, i64)]) -> Books {
        let mut b = Books::new();
        for &(id, units) in stock {
            b.stock(ProductId::new(id), Stock::new(units).expect("valid"));
        }
        for &(user, balance) in balances {
            b.wallet(UserId::new(user), points(balance));
        }
        for &(c, owner) in coupons {
            b.usable_coupon(code(c), UserId::new(owner));
        }
        b
    }

    fn paid_leaving(balance: i64) -> Result<Taken, PlaceOrderError> {
        Ok(Taken {
            balance_after: Some(points(balance)),
        })
    }

    fn out_of_stock(id: i64) -> Result<Taken, PlaceOrderError> {
        Err(PlaceOrderError::OutOfStock {
            product_id: ProductId::new(id),
        })
    }

    #[test]
    fn orders_are_served_in_arrival_order_until_the_stock_runs_out() {
        let mut b = books(&[(1, 2)], &[(7, 1_000), (8, 1_000), (9, 1_000)], &[]);

        let answers: Vec<_> = [7, 8, 9]
            .iter()
            .map(|&u| b.take(&order(u, &[(1, 1)], 100, None)))
            .collect();

        assert_eq!(
            answers,
            [paid_leaving(900), paid_leaving(900), out_of_stock(1)]
        );
        assert_eq!(
            b,
            books(&[(1, 0)], &[(7, 900), (8, 900), (9, 1_000)], &[]),
            "the refused payer keeps the balance"
        );
    }

    #[test]
    fn of_two_orders_for_the_last_unit_the_first_to_arrive_gets_it() {
        let mut b = books(&[(1, 1)], &[(7, 1_000), (8, 1_000)], &[]);

        let late_first = b.take(&order(8, &[(1, 1)], 100, None));
        let early_second = b.take(&order(7, &[(1, 1)], 100, None));

        assert_eq!(
            late_first,
            paid_leaving(900),
            "arrival order, not user order"
        );
        assert_eq!(early_second, out_of_stock(1));
        assert_eq!(b, books(&[(1, 0)], &[(7, 1_000), (8, 900)], &[]));
    }

    #[test]
    fn two_orders_of_one_payer_draw_on_one_balance() {
        let mut b = books(&[(1, 10)], &[(7, 150)], &[]);

        let first = b.take(&order(7, &[(1, 1)], 100, None));
        let second = b.take(&order(7, &[(1, 1)], 100, None));

        assert_eq!(first, paid_leaving(50));
        assert_eq!(second, Err(PlaceOrderError::InsufficientBalance));
        assert_eq!(
            b,
            books(&[(1, 9)], &[(7, 50)], &[]),
            "the refused order takes no stock"
        );
    }

    #[test]
    fn an_order_is_taken_whole_or_not_at_all() {
        let mut b = books(&[(1, 5), (2, 0)], &[(7, 1_000)], &[]);

        let refused = b.take(&order(7, &[(1, 1), (2, 1)], 200, None));

        assert_eq!(refused, out_of_stock(2));
        assert_eq!(b, books(&[(1, 5), (2, 0)], &[(7, 1_000)], &[]));
    }

    #[test]
    fn a_refused_order_leaves_the_books_unchanged_whatever_refused_it() {
        let before = books(
            &[(1, 5), (2, 0)],
            &[(7, 150)],
            &[("MINE", 7), ("THEIRS", 8)],
        );
        let refused = [
            order(7, &[(1, 2), (2, 1)], 100, Some("MINE")),
            order(7, &[(1, 2)], 200, Some("MINE")),
            order(7, &[(1, 2)], 100, Some("THEIRS")),
            order(7, &[(1, 2)], 100, Some("NONE")),
        ];

        for o in &refused {
            let mut b = before.clone();

            assert!(b.take(o).is_err(), "{o:?}");
            assert_eq!(b, before, "{o:?}");
        }
    }

    #[test]
    fn stock_is_refused_before_balance_and_balance_before_coupon() {
        let mut b = books(&[(1, 0), (2, 5)], &[(7, 0)], &[]);

        assert_eq!(
            b.take(&order(7, &[(1, 1)], 100, Some("NOPE"))),
            out_of_stock(1)
        );
        assert_eq!(
            b.take(&order(7, &[(2, 1)], 100, Some("NOPE"))),
            Err(PlaceOrderError::InsufficientBalance)
        );
        assert_eq!(
            b.take(&order(7, &[(2, 1)], 0, Some("NOPE"))),
            Err(PlaceOrderError::CouponNotApplicable)
        );
    }

    #[test]
    fn the_first_line_short_of_stock_in_product_order_is_named() {
        let mut b = books(&[(1, 0), (2, 0)], &[(7, 1_000)], &[]);

        assert_eq!(
            b.take(&order(7, &[(1, 1), (2, 1)], 200, None)),
            out_of_stock(1)
        );
    }

    #[test]
    fn a_coupon_serves_its_owner_once_and_never_another_user() {
        let mut b = books(&[(1, 10)], &[(7, 1_000), (8, 1_000)], &[("CODE", 7)]);

        let stranger = b.take(&order(8, &[(1, 1)], 100, Some("CODE")));
        let owner = b.take(&order(7, &[(1, 1)], 100, Some("CODE")));
        let again = b.take(&order(7, &[(1, 1)], 100, Some("CODE")));

        assert_eq!(stranger, Err(PlaceOrderError::CouponNotApplicable));
        assert_eq!(owner, paid_leaving(900));
        assert_eq!(again, Err(PlaceOrderError::CouponNotApplicable));
        assert_eq!(
            b.balances[&UserId::new(8)],
            points(1_000),
            "the stranger paid nothing"
        );
    }

    #[test]
    fn an_order_that_pays_nothing_needs_no_wallet() {
        let mut b = books(&[(1, 1)], &[], &[("FREE", 7)]);

        let taken = b.take(&order(7, &[(1, 1)], 0, Some("FREE")));

        assert_eq!(
            taken,
            Ok(Taken {
                balance_after: None
            })
        );
        assert_eq!(b, books(&[(1, 0)], &[], &[]));
    }

    #[test]
    fn a_payer_without_a_wallet_has_no_balance() {
        let mut b = books(&[(1, 1)], &[], &[]);

        assert_eq!(
            b.take(&order(7, &[(1, 1)], 100, None)),
            Err(PlaceOrderError::InsufficientBalance)
        );
    }

    #[test]
    fn the_rows_to_lock_are_listed_once_each_sorted_and_only_payers_need_a_wallet() {
        let orders = [
            order(9, &[(3, 1), (5, 1)], 100, Some("ZULU")),
            order(7, &[(1, 1), (3, 1)], 0, Some("ALFA")),
            order(9, &[(5, 1)], 100, Some("ZULU")),
        ];

        let rows = RowsToLock::of(&orders);

        assert_eq!(rows.products, [1, 3, 5].map(ProductId::new));
        assert_eq!(rows.payers, [UserId::new(9)], "user 7 pays nothing");
        assert_eq!(rows.coupons, [code("ALFA"), code("ZULU")]);
    }
}
