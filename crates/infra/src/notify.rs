//! The [`Notifier`] that writes one JSON line per notice, to standard output
//! in production (logs go to standard error, so the two never mix).

use std::io::Write;
use std::sync::Mutex;

use domain::coupon::{ExpiryNotice, Notifier};
use serde_json::json;

/// The notice text the product asks for.
pub const EXPIRY_MESSAGE: &str = "쿠폰이 3일 후 만료됩니다.";

pub struct JsonLineNotifier<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> std::fmt::Debug for JsonLineNotifier<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonLineNotifier")
    }
}

impl JsonLineNotifier<std::io::Stdout> {
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

impl<W: Write + Send> JsonLineNotifier<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    /// The writer, for tests that read what was written.
    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<W: Write + Send> Notifier for JsonLineNotifier<W> {
    fn notify(&self, notice: &ExpiryNotice) {
        let line = json!({
            "message": EXPIRY_MESSAGE,
            "userId": notice.user_id.get(),
            "code": notice.code.as_str(),
            "expiresAt": notice.expires_at,
        });
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            tracing::error!(user_id = %notice.user_id, "could not write an expiry notice");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::identity::UserId;
    use domain::ordering::CouponCode;

    use super::*;

    #[test]
    fn writes_one_json_line_with_the_message_user_and_code() {
        let notifier = JsonLineNotifier::new(Vec::new());
        let notice = ExpiryNotice {
            user_id: UserId::new(7),
            code: CouponCode::parse("ABCD-EFGH").expect("valid"),
            expires_at: Utc::now(),
        };

        notifier.notify(&notice);
        notifier.notify(&notice);

        let text = String::from_utf8(notifier.into_inner()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(first["message"], "쿠폰이 3일 후 만료됩니다.");
        assert_eq!(
            (first["userId"].as_i64(), first["code"].as_str()),
            (Some(7), Some("ABCD-EFGH"))
        );
    }
}
