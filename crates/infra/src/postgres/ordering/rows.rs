//! The rows a batch writes: one struct per row of each table, filled from
//! the orders it took and the answers it gives.
//!
//! Each struct is bound to the batch statement ([`write`](super::write)) as
//! one array per column by [`unnest_rows!`], so a column cannot be forgotten
//! for one row or shifted against another. What a batch takes from a product
//! or a wallet is summed here, one row per product and per payer, so the
//! statement's guards (`stock >= quantity`, `balance >= amount`) judge the
//! batch's whole take and its row counts can be checked one for one.

use std::collections::BTreeMap;

use diesel::sql_types::{Int8, Nullable, Text};
use domain::ordering::{Order, Taken};

use super::event::order_paid_event;
use crate::postgres::batch_keys::AnswerRow;
use crate::postgres::unnest::unnest_rows;

unnest_rows! {
    /// The units a batch takes from one product.
    pub(super) struct StockTake {
        product_id: i64 as Int8,
        quantity: i64 as Int8,
    }
}

unnest_rows! {
    /// The points a batch takes from one payer's wallet.
    pub(super) struct WalletDebit {
        user_id: i64 as Int8,
        amount: i64 as Int8,
    }
}

unnest_rows! {
    /// A row of `orders`; its id was drawn from the table's sequence.
    pub(super) struct NewOrderRow {
        id: i64 as Int8,
        user_id: i64 as Int8,
        total_amount: i64 as Int8,
        discount_amount: i64 as Int8,
        paid_amount: i64 as Int8,
        coupon_code: Option<String> as Nullable<Text>,
    }
}

unnest_rows! {
    /// A row of `order_items`: one line of an order.
    pub(super) struct NewItemRow {
        order_id: i64 as Int8,
        product_id: i64 as Int8,
        name: String as Text,
        quantity: i64 as Int8,
        unit_price: i64 as Int8,
        line_total: i64 as Int8,
    }
}

unnest_rows! {
    /// A PAYMENT row of `point_ledger`: one order's payment.
    pub(super) struct LedgerRow {
        user_id: i64 as Int8,
        amount: i64 as Int8,
        /// The payer's balance right after this payment.
        balance_after: i64 as Int8,
        order_id: i64 as Int8,
    }
}

unnest_rows! {
    /// A coupon an order consumes.
    pub(super) struct CouponUse {
        code: String as Text,
        /// The orderer: the write consumes the coupon only if it is theirs.
        owner_id: i64 as Int8,
        order_id: i64 as Int8,
    }
}

unnest_rows! {
    /// An `order.paid` event for the outbox.
    pub(super) struct OutboxRow {
        /// A UUID, as text.
        event_id: String as Text,
        /// The event's JSON, as text.
        payload: String as Text,
    }
}

/// Every row of a batch's write, table by table.
#[derive(Default)]
pub(super) struct BatchRows {
    /// Product id → units taken by the whole batch.
    taken: BTreeMap<i64, i64>,
    /// Payer → points taken by the whole batch.
    debited: BTreeMap<i64, i64>,
    pub orders: Vec<NewOrderRow>,
    pub items: Vec<NewItemRow>,
    pub ledger: Vec<LedgerRow>,
    pub coupon_uses: Vec<CouponUse>,
    pub events: Vec<OutboxRow>,
    /// Every order's answer under its key ([`Answers`](crate::postgres::batch_keys::Answers)).
    pub answers: Vec<AnswerRow>,
}

impl BatchRows {
    /// Adds the rows of an order the books took.
    pub fn placed(&mut self, order: &Order, taken: Taken) {
        let id = order.id.get();
        let user_id = order.user_id.get();
        self.orders.push(NewOrderRow {
            id,
            user_id,
            total_amount: order.total.get(),
            discount_amount: order.discount.get(),
            paid_amount: order.paid.get(),
            coupon_code: order.coupon.as_ref().map(|c| c.as_str().to_owned()),
        });
        for line in &order.lines {
            *self.taken.entry(line.product_id.get()).or_default() += line.quantity.get();
            self.items.push(NewItemRow {
                order_id: id,
                product_id: line.product_id.get(),
                name: line.name.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: line.unit_price.get(),
                line_total: line.line_total.get(),
            });
        }
        if let Some(after) = taken.balance_after {
            *self.debited.entry(user_id).or_default() += order.paid.get();
            self.ledger.push(LedgerRow {
                user_id,
                amount: order.paid.get(),
                balance_after: after.get(),
                order_id: id,
            });
        }
        if let Some(code) = &order.coupon {
            self.coupon_uses.push(CouponUse {
                code: code.as_str().to_owned(),
                owner_id: user_id,
                order_id: id,
            });
        }
        let event_id = uuid::Uuid::new_v4().to_string();
        self.events.push(OutboxRow {
            payload: order_paid_event(&event_id, order).to_string(),
            event_id,
        });
    }

    /// One row per product the batch takes from, in id order.
    pub fn stock_takes(&self) -> Vec<StockTake> {
        let take = |(&product_id, &quantity)| StockTake {
            product_id,
            quantity,
        };
        self.taken.iter().map(take).collect()
    }

    /// One row per payer the batch debits, in id order.
    pub fn wallet_debits(&self) -> Vec<WalletDebit> {
        let debit = |(&user_id, &amount)| WalletDebit { user_id, amount };
        self.debited.iter().map(debit).collect()
    }
}
