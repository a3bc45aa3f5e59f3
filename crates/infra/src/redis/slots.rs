//! Key names, and which keys share a slot on a Redis Cluster.
//!
//! A cluster refuses a script or a multi-key command whose keys live in
//! different slots (`CROSSSLOT`). A key's slot is the CRC16 of its hash tag,
//! the text between its first `{` and the next `}`, when it has one. So
//! every key that a script takes together with others carries the tag of
//! what it belongs to, before any text a client chose (an idempotency key
//! may hold braces of its own):
//!
//! | keys taken together | tag | where |
//! |---|---|---|
//! | `stock:{7}`, `stock:{7}:leases`, `order-holder:{7}:…` (on a cluster, one holder mark per product) | the product | the stock gate (`counter.rs`) |
//! | `invest:{7}:left`, `invest:{7}:left:leases`, `invest-holder:{7}:…` | the investment product | the invest gate |
//! | `coupon:{7}:left`, `coupon:{7}:users`, `coupon:{7}:left:leases` | the campaign | the issue gate |
//! | `popular:{h}:2026120207` (72 hours at once), `popular:{h}:seen:…` | one tag for the whole ranking | `ranking.rs` |
//!
//! Every other script takes one key (a lock, a rate limit, a refusal
//! record, the order stream). On one Redis server the tags change nothing.
//! The unit tests below compute the slots of each script's keys.

use domain::identity::UserId;
use redis::cluster_routing::Slot;

use super::RedisKeys;

/// The slot a cluster keeps `key` in.
pub fn slot(key: &str) -> Slot {
    Slot::for_key(key)
}

/// The stock counter of a product.
pub(crate) fn stock(keys: &RedisKeys, product: impl std::fmt::Display) -> String {
    keys.key(&format!("stock:{{{product}}}"))
}

/// What is left to invest in a product.
pub(crate) fn invest_left(keys: &RedisKeys, product: impl std::fmt::Display) -> String {
    keys.key(&format!("invest:{{{product}}}:left"))
}

/// The codes left in a campaign.
pub(crate) fn coupon_left(keys: &RedisKeys, campaign: impl std::fmt::Display) -> String {
    keys.key(&format!("coupon:{{{campaign}}}:left"))
}

/// The users holding a code of a campaign.
pub(crate) fn coupon_users(keys: &RedisKeys, campaign: impl std::fmt::Display) -> String {
    keys.key(&format!("coupon:{{{campaign}}}:users"))
}

/// One hour of the sales ranking (`YYYYMMDDHH`).
pub(crate) fn popular_hour(keys: &RedisKeys, hour: &str) -> String {
    keys.key(&format!("popular:{{h}}:{hour}"))
}

/// The mark that an order event was counted by the ranking.
pub(crate) fn popular_seen(keys: &RedisKeys, event_id: &str) -> String {
    keys.key(&format!("popular:{{h}}:seen:{event_id}"))
}

/// The tag of a key (its first `{…}`), if it has one.
pub(crate) fn tag_of(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    Some(&key[open + 1..open + 1 + close]).filter(|t| !t.is_empty())
}

/// A holder's mark at the gate named `gate`: one for all its counters on
/// one Redis server (`counter: None`), or one per counter on a cluster,
/// tagged as the counter is, so that one script takes both.
pub(crate) fn holder(
    keys: &RedisKeys,
    gate: &str,
    counter: Option<&str>,
    user_id: UserId,
    key: &str,
) -> String {
    match counter.and_then(tag_of) {
        Some(tag) => keys.key(&format!("{gate}-holder:{{{tag}}}:{user_id}:{key}")),
        None => keys.key(&format!("{gate}-holder:{user_id}:{key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(keys: &[String]) {
        let first = slot(&keys[0]);
        for key in keys {
            assert_eq!(
                slot(key),
                first,
                "{key} is in another slot than {}",
                keys[0]
            );
        }
    }

    fn user() -> UserId {
        UserId::new(42)
    }

    #[test]
    fn each_scripts_keys_share_a_slot_under_any_prefix() {
        for prefix in ["", "t:17:", "shop{eu}:"] {
            let keys = RedisKeys::new(prefix);
            for id in [1_i64, 7, 4_242, 9_999_999] {
                // The stock gate on a cluster: the counter and its holder mark,
                // whatever the client's idempotency key holds.
                for idem in ["k-1", "{other}", "a}b{c", ""] {
                    let counter = stock(&keys, id);
                    agree(&[
                        counter.clone(),
                        super::super::counter::leases_of(&counter),
                        holder(&keys, "order", Some(&counter), user(), idem),
                    ]);
                    let left = invest_left(&keys, id);
                    agree(&[
                        left.clone(),
                        super::super::counter::leases_of(&left),
                        holder(&keys, "invest", Some(&left), user(), idem),
                    ]);
                }
                let left = coupon_left(&keys, id);
                agree(&[
                    super::super::counter::leases_of(&left),
                    left,
                    coupon_users(&keys, id),
                ]);
            }
            // The ranking: every hour of the window, and the seen marks.
            let mut ranking: Vec<String> = (0..72)
                .map(|h| popular_hour(&keys, &format!("20261202{:02}", h % 24)))
                .collect();
            ranking.push(popular_seen(&keys, "8f5d3c2e-6a1b-4f7e-9d0c-2b8e4a6f1c3d"));
            agree(&ranking);
        }
    }

    #[test]
    fn products_spread_over_slots() {
        let keys = RedisKeys::new("");
        let slots: std::collections::HashSet<Slot> =
            (1..=100).map(|id| slot(&stock(&keys, id))).collect();
        assert!(
            slots.len() > 90,
            "one slot per product, mostly: {}",
            slots.len()
        );
    }

    #[test]
    fn the_tag_is_the_first_braces() {
        assert_eq!(tag_of("stock:{7}"), Some("7"));
        assert_eq!(tag_of("p:stock:{7}:x{y}"), Some("7"));
        assert_eq!(tag_of("stock:7"), None);
        assert_eq!(tag_of("a{}b"), None);
        assert_eq!(
            holder(&RedisKeys::new("p:"), "order", None, user(), "k"),
            "p:order-holder:42:k"
        );
        assert_eq!(
            holder(
                &RedisKeys::new("p:"),
                "order",
                Some("p:stock:{7}"),
                user(),
                "k"
            ),
            "p:order-holder:{7}:42:k"
        );
    }
}
