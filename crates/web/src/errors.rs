//! The one place where use-case errors become HTTP answers: every variant of
//! every use-case error maps to a status and a stable `code` here.
//!
//! `Unavailable` is logged with its cause and answered `503` with no internals.

use actix_web::http::StatusCode;
use application::identity::{AuthenticateError, ProfileError, SignInError, SignUpError};
use application::throttle::RateLimited;
use domain::error::Unavailable;
use domain::identity::TokenError;
use domain::paging::PageRequestError;

use crate::problem::ApiError;

impl From<Unavailable> for ApiError {
    fn from(err: Unavailable) -> Self {
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        tracing::warn!(
            service = err.service(),
            cause = cause.as_deref().unwrap_or(""),
            "answering 503"
        );
        ApiError::unavailable(err.service())
    }
}

impl From<PageRequestError> for ApiError {
    fn from(err: PageRequestError) -> Self {
        match err {
            PageRequestError::Size { .. } => ApiError::invalid_field("size", err),
            PageRequestError::Page => ApiError::invalid_field("page", err),
        }
    }
}

// ---- identity ----

impl From<SignUpError> for ApiError {
    fn from(err: SignUpError) -> Self {
        match err {
            SignUpError::LoginIdTaken => ApiError::conflict(
                "LOGIN_ID_TAKEN",
                "Login id taken",
                "this login id is already taken",
            ),
            SignUpError::Unavailable(u) => u.into(),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::InvalidCredentials => invalid_credentials(),
            SignInError::RateLimited(limited) => limited.into(),
            SignInError::Unavailable(u) => u.into(),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        ApiError::rate_limited(limited.retry_after)
    }
}

/// `401 INVALID_CREDENTIALS`: the same answer for an unknown login and a wrong password.
pub(crate) fn invalid_credentials() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "Invalid credentials",
        "login id or password is wrong",
    )
}

impl From<AuthenticateError> for ApiError {
    fn from(err: AuthenticateError) -> Self {
        match err {
            AuthenticateError::Token(TokenError::Expired) => {
                ApiError::unauthenticated("the access token has expired")
            }
            AuthenticateError::Token(TokenError::Malformed | TokenError::Invalid) => {
                ApiError::unauthenticated("the access token is invalid")
            }
            AuthenticateError::InvalidGatewayIdentity => {
                ApiError::unauthenticated("the gateway user header is not a valid login id")
            }
            AuthenticateError::PasswordAccount => ApiError::unauthenticated(
                "this account signs in with its password: use a Bearer token",
            ),
            AuthenticateError::Unavailable(u) => u.into(),
        }
    }
}

impl From<ProfileError> for ApiError {
    fn from(err: ProfileError) -> Self {
        match err {
            // A valid token for a user that no longer exists proves nothing.
            ProfileError::NotFound => {
                ApiError::unauthenticated("the user of this token no longer exists")
            }
            ProfileError::Unavailable(u) => u.into(),
        }
    }
}

// ---- points ----

impl From<domain::points::ChargeError> for ApiError {
    fn from(err: domain::points::ChargeError) -> Self {
        match err {
            domain::points::ChargeError::InvalidAmount(e) => ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "INVALID_CHARGE_AMOUNT",
                "Invalid charge amount",
                e.to_string(),
            )
            .with("field", "amount")
            .with("min", e.min)
            .with("max", e.max),
            domain::points::ChargeError::BalanceLimitExceeded { max } => ApiError::conflict(
                "BALANCE_LIMIT_EXCEEDED",
                "Balance limit exceeded",
                format!("the balance may not exceed {max} points"),
            )
            .with("maxBalance", max),
        }
    }
}

// ---- catalogue and orders ----

fn product_not_found(id: domain::catalog::ProductId) -> ApiError {
    ApiError::not_found("PRODUCT_NOT_FOUND", format!("product {id} does not exist"))
        .with("productId", id.get())
}

impl From<application::catalog::ProductError> for ApiError {
    fn from(err: application::catalog::ProductError) -> Self {
        match err {
            application::catalog::ProductError::NotFound(id) => product_not_found(id),
            application::catalog::ProductError::VersionMoved(id) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED",
                "Precondition failed",
                format!(
                    "product {id} changed since the version in If-Match (a sale changes it too); \
                     read it again, or send stockDelta"
                ),
            )
            .with("productId", id.get()),
            application::catalog::ProductError::InsufficientStock(id) => ApiError::new(
                StatusCode::CONFLICT,
                "INSUFFICIENT_STOCK",
                "Insufficient stock",
                format!("product {id} does not have that many units to take"),
            )
            .with("productId", id.get()),
            application::catalog::ProductError::StockOverflow(id) => ApiError::invalid_field(
                "stockDelta",
                format!("the stock of product {id} would exceed 9223372036854775807"),
            ),
            application::catalog::ProductError::Unavailable(u) => u.into(),
        }
    }
}

impl From<domain::ordering::PlaceOrderError> for ApiError {
    fn from(err: domain::ordering::PlaceOrderError) -> Self {
        use domain::ordering::PlaceOrderError as E;
        match err {
            E::ProductNotFound { product_id } => product_not_found(product_id),
            E::OutOfStock { product_id } => ApiError::conflict(
                "OUT_OF_STOCK",
                "Out of stock",
                format!("product {product_id} does not have enough stock"),
            )
            .with("productId", product_id.get()),
            E::InsufficientBalance => ApiError::conflict(
                "INSUFFICIENT_BALANCE",
                "Insufficient balance",
                "the points balance is lower than the amount to pay",
            ),
            E::CouponNotApplicable => ApiError::conflict(
                "COUPON_NOT_APPLICABLE",
                "Coupon not applicable",
                "the coupon is unknown, not yours, used, expired, or the order is below its minimum",
            ),
            E::TotalTooLarge => ApiError::invalid_field("items", "the order total is too large"),
        }
    }
}

// ---- coupons ----

impl From<domain::coupon::InvalidCampaign> for ApiError {
    fn from(err: domain::coupon::InvalidCampaign) -> Self {
        ApiError::invalid_field(err.field, err.message)
    }
}

impl From<application::coupon::CampaignError> for ApiError {
    fn from(err: application::coupon::CampaignError) -> Self {
        match err {
            application::coupon::CampaignError::NotFound(id) => ApiError::not_found(
                "CAMPAIGN_NOT_FOUND",
                format!("campaign {id} does not exist"),
            ),
            application::coupon::CampaignError::Unavailable(u) => u.into(),
        }
    }
}

impl From<application::coupon::IssueCouponError> for ApiError {
    fn from(err: application::coupon::IssueCouponError) -> Self {
        use application::coupon::IssueCouponError as E;
        match err {
            E::CampaignNotFound(id) => ApiError::not_found(
                "CAMPAIGN_NOT_FOUND",
                format!("campaign {id} does not exist"),
            ),
            E::NotActive => ApiError::conflict(
                "CAMPAIGN_NOT_ACTIVE",
                "Campaign not active",
                "the campaign is not issuing coupons now",
            ),
            E::SoldOut => ApiError::conflict(
                "COUPON_SOLD_OUT",
                "Coupons sold out",
                "every coupon of the campaign is taken",
            ),
            E::AlreadyIssued => ApiError::conflict(
                "COUPON_ALREADY_ISSUED",
                "Coupon already issued",
                "you already hold a coupon of this campaign",
            ),
            E::Unavailable(u) => u.into(),
        }
    }
}

impl From<domain::coupon::RedeemError> for ApiError {
    fn from(err: domain::coupon::RedeemError) -> Self {
        use domain::coupon::RedeemError as E;
        match err {
            E::NotFound => ApiError::not_found("COUPON_NOT_FOUND", "no such coupon of yours"),
            E::AlreadyUsed => ApiError::conflict(
                "COUPON_ALREADY_USED",
                "Coupon already used",
                "the coupon is already used",
            ),
            E::NotUsed => ApiError::conflict(
                "COUPON_NOT_USED",
                "Coupon not used",
                "the coupon is not used",
            ),
            E::Expired => {
                ApiError::conflict("COUPON_EXPIRED", "Coupon expired", "the coupon has expired")
            }
        }
    }
}

impl From<application::coupon::RedeemCouponError> for ApiError {
    fn from(err: application::coupon::RedeemCouponError) -> Self {
        use application::coupon::RedeemCouponError as E;
        match err {
            E::Refused(refusal) => refusal.into(),
            E::Unavailable(u) => u.into(),
        }
    }
}

impl From<application::coupon::ImportError> for ApiError {
    fn from(err: application::coupon::ImportError) -> Self {
        use application::coupon::ImportError as E;
        match err {
            E::CampaignNotFound(id) => ApiError::not_found(
                "CAMPAIGN_NOT_FOUND",
                format!("campaign {id} does not exist"),
            ),
            E::NoCodeColumn => {
                ApiError::invalid_field("body", "the header row has no `code` column")
            }
            E::Read(_) => ApiError::validation("the upload could not be read"),
            E::Unavailable(u) => u.into(),
        }
    }
}

// ---- investments ----

impl From<domain::invest::InvalidInvestProduct> for ApiError {
    fn from(err: domain::invest::InvalidInvestProduct) -> Self {
        ApiError::invalid_field(err.field, err.message)
    }
}

impl From<domain::invest::InvestError> for ApiError {
    fn from(err: domain::invest::InvestError) -> Self {
        use domain::invest::InvestError as E;
        match err {
            E::ProductNotFound { product_id } => ApiError::not_found(
                "INVEST_PRODUCT_NOT_FOUND",
                format!("investment product {product_id} does not exist"),
            )
            .with("productId", product_id.get()),
            E::NotInRecruitingPeriod { product_id } => ApiError::conflict(
                "NOT_IN_RECRUITING_PERIOD",
                "Not in recruiting period",
                format!("investment product {product_id} is not recruiting now"),
            )
            .with("productId", product_id.get()),
            E::SoldOut { product_id } => ApiError::conflict(
                "SOLD_OUT",
                "Sold out",
                format!("investment product {product_id} has reached its target"),
            )
            .with("productId", product_id.get())
            .with("remainingAmount", 0),
            E::AmountExceedsRemaining {
                product_id,
                remaining,
            } => ApiError::conflict(
                "AMOUNT_EXCEEDS_REMAINING",
                "Amount exceeds remaining",
                format!("only {remaining} can still be invested in product {product_id}"),
            )
            .with("productId", product_id.get())
            .with("remainingAmount", remaining.get()),
        }
    }
}
