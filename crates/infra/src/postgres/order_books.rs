//! What a batch of orders decides in memory, over rows it has locked: the
//! stock of each product, each payer's balance and the coupons still free.
//!
//! [`order_batch`](super::order_batch) locks those rows `FOR UPDATE`, loads
//! them into [`Books`] and lets [`Books::take`] decide each order in arrival
//! order, with the same guards and the same refusal order as one order's
//! guarded `UPDATE`s: every line's stock (in product-id order), then the
//! balance, then the coupon. An order is taken whole or not at all. The
//! writes that follow are checked against the same guards in SQL, and the
//! tables' `CHECK` constraints stay the last word.

use std::collections::HashMap;

use domain::ordering::{PlaceOrderError, PricedOrder};

/// The locked rows a batch decides against.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Books {
    /// Product id → units left.
    pub stock: HashMap<i64, i64>,
    /// User id → balance; a user without a wallet has none.
    pub balance: HashMap<i64, i64>,
    /// Coupon code → owner, for coupons that are issued, unused and unexpired.
    pub coupons: HashMap<String, i64>,
}

impl Books {
    /// Takes `order` whole, or refuses it and changes nothing. Returns the
    /// payer's balance after the payment (`None` when nothing is paid).
    pub fn take(&mut self, order: &PricedOrder) -> Result<Option<i64>, PlaceOrderError> {
        for line in &order.lines {
            let left = self.stock.get(&line.product_id.get()).copied().unwrap_or(0);
            if left < line.quantity.get() {
                return Err(PlaceOrderError::OutOfStock {
                    product_id: line.product_id,
                });
            }
        }
        let user = order.user_id.get();
        let paid = order.paid.get();
        let balance_after = if paid > 0 {
            let balance = self.balance.get(&user).copied().unwrap_or(0);
            if balance < paid {
                return Err(PlaceOrderError::InsufficientBalance);
            }
            Some(balance - paid)
        } else {
            None
        };
        if let Some(code) = &order.coupon
            && self.coupons.get(code.as_str()) != Some(&user)
        {
            return Err(PlaceOrderError::CouponNotApplicable);
        }
        for line in &order.lines {
            if let Some(left) = self.stock.get_mut(&line.product_id.get()) {
                *left -= line.quantity.get();
            }
        }
        if let Some(after) = balance_after {
            self.balance.insert(user, after);
        }
        if let Some(code) = &order.coupon {
            self.coupons.remove(code.as_str());
        }
        Ok(balance_after)
    }
}

#[cfg(test)]
mod tests {
    use domain::catalog::{ProductId, ProductName};
    use domain::identity::UserId;
    use domain::money::Points;
    use domain::ordering::{CouponCode, OrderLine, Quantity};

    use super::*;

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
            coupon: coupon.map(|c| CouponCode::parse(c).expect("valid")),
        }
    }

    fn books(stock: &[(i64, i64)], balance: &[(i64, i64)], coupons: &[(&str, i64)]) -> Books {
        Books {
            stock: stock.iter().copied().collect(),
            balance: balance.iter().copied().collect(),
            coupons: coupons.iter().map(|&(c, o)| (c.to_owned(), o)).collect(),
        }
    }

    #[test]
    fn orders_are_served_in_arrival_order_until_the_stock_runs_out() {
        let mut b = books(&[(1, 2)], &[(7, 1_000), (8, 1_000), (9, 1_000)], &[]);

        let answers: Vec<_> = [7, 8, 9]
            .iter()
            .map(|&u| b.take(&order(u, &[(1, 1)], 100, None)))
            .collect();

        assert_eq!(answers[0], Ok(Some(900)));
        assert_eq!(answers[1], Ok(Some(900)));
        assert_eq!(
            answers[2],
            Err(PlaceOrderError::OutOfStock {
                product_id: ProductId::new(1)
            })
        );
        assert_eq!(b.stock[&1], 0);
        assert_eq!(b.balance[&9], 1_000, "the refused payer keeps the balance");
    }

    #[test]
    fn two_orders_of_one_payer_draw_on_one_balance() {
        let mut b = books(&[(1, 10)], &[(7, 150)], &[]);

        let first = b.take(&order(7, &[(1, 1)], 100, None));
        let second = b.take(&order(7, &[(1, 1)], 100, None));

        assert_eq!(first, Ok(Some(50)));
        assert_eq!(second, Err(PlaceOrderError::InsufficientBalance));
        assert_eq!(b.stock[&1], 9, "the refused order takes no stock");
    }

    #[test]
    fn an_order_is_taken_whole_or_not_at_all() {
        let mut b = books(&[(1, 5), (2, 0)], &[(7, 1_000)], &[]);

        let refused = b.take(&order(7, &[(1, 1), (2, 1)], 200, None));

        assert_eq!(
            refused,
            Err(PlaceOrderError::OutOfStock {
                product_id: ProductId::new(2)
            })
        );
        assert_eq!(b, books(&[(1, 5), (2, 0)], &[(7, 1_000)], &[]));
    }

    #[test]
    fn stock_is_refused_before_balance_and_balance_before_coupon() {
        let mut b = books(&[(1, 0), (2, 5)], &[(7, 0)], &[]);

        assert_eq!(
            b.take(&order(7, &[(1, 1)], 100, Some("NOPE"))),
            Err(PlaceOrderError::OutOfStock {
                product_id: ProductId::new(1)
            })
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
    fn a_coupon_serves_its_owner_once() {
        let mut b = books(&[(1, 10)], &[(7, 1_000), (8, 1_000)], &[("CODE", 7)]);

        let stranger = b.take(&order(8, &[(1, 1)], 100, Some("CODE")));
        let owner = b.take(&order(7, &[(1, 1)], 100, Some("CODE")));
        let again = b.take(&order(7, &[(1, 1)], 100, Some("CODE")));

        assert_eq!(stranger, Err(PlaceOrderError::CouponNotApplicable));
        assert_eq!(owner, Ok(Some(900)));
        assert_eq!(again, Err(PlaceOrderError::CouponNotApplicable));
    }

    #[test]
    fn a_free_order_touches_no_balance() {
        let mut b = books(&[(1, 1)], &[], &[]);

        assert_eq!(b.take(&order(7, &[(1, 1)], 0, None)), Ok(None));
        assert!(b.balance.is_empty());
    }
}
