//! The decision of an investment batch: which investments are taken, against
//! the products the batch has locked, at one clock.
//!
//! The invest store locks the batch's products, reads the database's clock
//! once the locks are held, finds which (product, user) pairs have invested
//! before, loads all of it into [`Books`] and calls [`Books::take`] for each
//! investment in arrival order. The rules are [`InvestProduct::admit`]'s, in
//! its refusal order (unknown, closed, sold out, too little left); an
//! investment is taken whole or refused and changes nothing, and later
//! investments see what earlier ones took. The store then writes the
//! batch's sums under the guard `current_amount + sum <= total_amount`, so a
//! bug here cannot exceed a target. Pure, so every rule is unit-tested
//! without a database.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::models::{InvestError, InvestProduct, InvestProductId};
use super::ports::InvestOrder;
use crate::identity::UserId;

/// What taking an investment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The investor's first investment in the product: `investor_count`
    /// grows by one.
    pub new_investor: bool,
}

/// The locked products a batch decides against, as they stand after the
/// investments taken so far, and the clock they are judged at. A product
/// that is not in the books does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    /// The database's clock, read once the products were locked.
    now: DateTime<Utc>,
    products: HashMap<InvestProductId, InvestProduct>,
    /// The (product, user) pairs with an investment, before or in this batch.
    investors: HashSet<(InvestProductId, UserId)>,
}

impl Books {
    /// Empty books judged at `now`: no products, no investors.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            products: HashMap::new(),
            investors: HashSet::new(),
        }
    }

    /// Records a locked product as it is.
    pub fn product(&mut self, product: InvestProduct) -> &mut Self {
        self.products.insert(product.id, product);
        self
    }

    /// Records that `user` has invested in `product` before.
    pub fn investor(&mut self, product: InvestProductId, user: UserId) -> &mut Self {
        self.investors.insert((product, user));
        self
    }

    /// The clock the books judge windows at.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The product as it stands after what was taken so far.
    pub fn get(&self, id: InvestProductId) -> Option<&InvestProduct> {
        self.products.get(&id)
    }

    /// Takes `order` whole, or refuses it and changes nothing.
    ///
    /// # Errors
    /// [`InvestError::ProductNotFound`] for a product not in the books, then
    /// [`InvestProduct::admit`]'s refusal at the books' clock:
    /// [`InvestError::NotInRecruitingPeriod`], [`InvestError::SoldOut`],
    /// [`InvestError::AmountExceedsRemaining`].
    pub fn take(&mut self, order: &InvestOrder) -> Result<Taken, InvestError> {
        let id = order.product_id;
        let product = self
            .products
            .get_mut(&id)
            .ok_or(InvestError::ProductNotFound { product_id: id })?;
        product.admit(order.amount, self.now)?;
        // `admit` passed, so the amount fits under the target.
        product.current = product
            .current
            .checked_add(order.amount.points())
            .filter(|&after| after <= product.total)
            .ok_or(InvestError::AmountExceedsRemaining {
                product_id: id,
                remaining: product.remaining(),
            })?;
        let new_investor = self.investors.insert((id, order.user_id));
        if new_investor {
            product.investors += 1;
        }
        Ok(Taken { new_investor })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::invest::{InvestAmount, InvestTitle, RecruitingWindow};
    use crate::money::Points;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0)
            .single()
            .expect("valid")
    }

    fn product(id: i64, total: i64, current: i64, investors: i64) -> InvestProduct {
        InvestProduct {
            id: InvestProductId::new(id),
            title: InvestTitle::parse("Solar farm").expect("valid"),
            total: Points::new(total).expect("valid"),
            current: Points::new(current).expect("valid"),
            investors,
            window: RecruitingWindow::new(at(9), at(18)).expect("valid"),
        }
    }

    fn order(user: i64, product: i64, amount: i64) -> InvestOrder {
        InvestOrder {
            user_id: UserId::new(user),
            product_id: InvestProductId::new(product),
            amount: InvestAmount::new(amount).expect("valid"),
        }
    }

    fn books_at(hour: u32, products: &[InvestProduct]) -> Books {
        let mut b = Books::new(at(hour));
        for p in products {
            b.product(p.clone());
        }
        b
    }

    const NEW: Result<Taken, InvestError> = Ok(Taken { new_investor: true });
    const AGAIN: Result<Taken, InvestError> = Ok(Taken {
        new_investor: false,
    });

    fn state(b: &Books, id: i64) -> (i64, i64) {
        let p = b.get(InvestProductId::new(id)).expect("in the books");
        (p.current.get(), p.investors)
    }

    #[test]
    fn investments_are_taken_in_arrival_order_until_the_target_is_reached() {
        let mut b = books_at(12, &[product(1, 1_000, 0, 0)]);

        let answers: Vec<_> = [(7, 400), (8, 500), (9, 200), (9, 100), (7, 1)]
            .iter()
            .map(|&(u, a)| b.take(&order(u, 1, a)))
            .collect();

        let id = InvestProductId::new(1);
        assert_eq!(
            answers,
            [
                NEW,
                NEW,
                Err(InvestError::AmountExceedsRemaining {
                    product_id: id,
                    remaining: Points::new(100).expect("valid"),
                }),
                NEW,
                Err(InvestError::SoldOut { product_id: id }),
            ]
        );
        assert_eq!(
            state(&b, 1),
            (1_000, 3),
            "refusals take nothing and count nobody"
        );
    }

    #[test]
    fn an_investor_is_counted_once_per_product_across_the_batch_and_before_it() {
        let mut b = books_at(12, &[product(1, 1_000, 100, 1), product(2, 1_000, 0, 0)]);
        b.investor(InvestProductId::new(1), UserId::new(7));

        let answers = [
            b.take(&order(7, 1, 10)), // invested in 1 before the batch
            b.take(&order(8, 1, 10)),
            b.take(&order(8, 1, 10)),
            b.take(&order(7, 2, 10)), // new in product 2
        ];

        assert_eq!(answers, [AGAIN, NEW, AGAIN, NEW]);
        assert_eq!(state(&b, 1), (130, 2));
        assert_eq!(state(&b, 2), (10, 1));
    }

    #[test]
    fn refusals_follow_admit_unknown_then_closed_then_full_then_too_much() {
        let full = product(2, 500, 500, 3);
        let mut open = books_at(12, &[product(1, 1_000, 900, 1), full.clone()]);
        let mut closed = books_at(19, &[full]);

        assert_eq!(
            open.take(&order(7, 3, 1)),
            Err(InvestError::ProductNotFound {
                product_id: InvestProductId::new(3)
            })
        );
        assert_eq!(
            closed.take(&order(7, 2, 1)),
            Err(InvestError::NotInRecruitingPeriod {
                product_id: InvestProductId::new(2)
            }),
            "closed wins over full"
        );
        assert_eq!(
            open.take(&order(7, 2, 1)),
            Err(InvestError::SoldOut {
                product_id: InvestProductId::new(2)
            })
        );
        assert_eq!(
            open.take(&order(7, 1, 101)),
            Err(InvestError::AmountExceedsRemaining {
                product_id: InvestProductId::new(1),
                remaining: Points::new(100).expect("valid"),
            })
        );
        assert_eq!(
            open.take(&order(7, 1, 100)),
            NEW,
            "exactly what remains fits"
        );
    }

    #[test]
    fn the_window_is_judged_at_the_books_clock_edges_included() {
        for (hour, open) in [(8, false), (9, true), (18, true)] {
            let mut b = books_at(hour, &[product(1, 1_000, 0, 0)]);
            assert_eq!(b.take(&order(7, 1, 1)).is_ok(), open, "at {hour}:00");
        }
    }

    #[test]
    fn a_refused_investment_does_not_make_its_user_an_investor() {
        let mut b = books_at(12, &[product(1, 100, 0, 0)]);

        let too_much = b.take(&order(7, 1, 101));
        let then_fits = b.take(&order(7, 1, 100));

        assert!(too_much.is_err());
        assert_eq!(then_fits, NEW, "the refusal did not count user 7");
        assert_eq!(state(&b, 1), (100, 1));
    }
}
