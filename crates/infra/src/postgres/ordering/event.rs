//! The `order.paid` event an order's batch puts in the outbox, in the shape
//! the data platform receives it (`docs/events.md`).

use chrono::SecondsFormat;
use domain::ordering::Order;
use serde_json::json;

/// The `order.paid` event of `order`, under `event_id`.
pub(super) fn order_paid_event(event_id: &str, order: &Order) -> serde_json::Value {
    json!({
        "eventId": event_id,
        "type": "order.paid",
        "occurredAt": order.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "orderId": order.id.get(),
        "userId": order.user_id.get(),
        "items": order.lines.iter().map(|l| json!({
            "productId": l.product_id.get(),
            "quantity": l.quantity.get(),
            "unitPrice": l.unit_price.get(),
            "lineTotal": l.line_total.get(),
        })).collect::<Vec<_>>(),
        "totalAmount": order.total.get(),
        "discountAmount": order.discount.get(),
        "paidAmount": order.paid.get(),
    })
}
