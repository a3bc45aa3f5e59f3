//! The [`Notifier`] that writes one JSON line per notice, to standard output
//! in production (logs go to standard error, so the two never mix). Each
//! line carries the notice's stable `noticeId`: a notice written again after
//! a run died before marking it is a repeat a consumer can drop.

use std::io::Write;
use std::sync::Mutex;

use domain::coupon::{ExpiryNotice, Notifier};
use domain::error::Unavailable;
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
    fn notify(&self, notice: &ExpiryNotice) -> Result<(), Unavailable> {
        let line = json!({
            "message": EXPIRY_MESSAGE,
            "noticeId": notice.notice_id().as_str(),
            "userId": notice.user_id.get(),
            "code": notice.code.as_str(),
            "expiresAt": notice.expires_at,
        });
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Flushed per line: a notice counts as written only once it left
        // the process, since it is marked sent right after.
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Unavailable::new("notice-output", e))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use domain::identity::UserId;
    use domain::ordering::CouponCode;

    use super::*;

    fn notice() -> ExpiryNotice {
        ExpiryNotice {
            coupon_id: 42,
            user_id: UserId::new(7),
            code: CouponCode::parse("ABCD-EFGH").expect("valid"),
            expires_at: Utc
                .with_ymd_and_hms(2026, 12, 4, 9, 30, 0)
                .single()
                .expect("valid"),
        }
    }

    #[test]
    fn writes_one_json_line_with_the_message_user_code_and_a_stable_notice_id() {
        let notifier = JsonLineNotifier::new(Vec::new());

        notifier.notify(&notice()).expect("written");
        notifier.notify(&notice()).expect("written");

        let text = String::from_utf8(notifier.into_inner()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "쿠폰이 3일 후 만료됩니다.");
        assert_eq!(
            (lines[0]["userId"].as_i64(), lines[0]["code"].as_str()),
            (Some(7), Some("ABCD-EFGH"))
        );
        assert_eq!(
            lines[0]["noticeId"].as_str(),
            Some(notice().notice_id().as_str())
        );
        assert_eq!(
            lines[0]["noticeId"], lines[1]["noticeId"],
            "a repeat is recognisable"
        );
    }

    /// An output that refuses every write, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_notice_that_cannot_be_written_is_reported_not_counted_sent() {
        let notifier = JsonLineNotifier::new(Closed);

        assert!(notifier.notify(&notice()).is_err());
    }
}
