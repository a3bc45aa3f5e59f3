//! Typed configuration from the environment, checked at start: a bad value
//! stops the process with an error that names the variable.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use domain::identity::{LoginId, Password};
use infra::auth::JwtSecret;
use thiserror::Error;

/// A variable that is set but unusable.
#[derive(Debug, Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// How log lines are written (to standard error; standard output is kept for
/// the service's own JSON-line output such as coupon notices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The admin account ensured at start-up.
#[derive(Debug, Clone)]
pub struct AdminBootstrap {
    pub login_id: LoginId,
    pub password: Password,
}

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    /// `APP_REDIS_CLUSTER_NODES`: a Redis Cluster's nodes (`host:port`);
    /// when set, `REDIS_URL` is not used.
    pub redis_cluster_nodes: Option<Vec<String>>,
    pub http_addr: SocketAddr,
    /// `None` means a random per-process secret (logged as a warning).
    pub jwt_secret: Option<JwtSecret>,
    pub jwt_ttl: Duration,
    pub admin: Option<AdminBootstrap>,
    /// Trusted-gateway mode (`APP_TRUSTED_USER_HEADER` with
    /// `APP_TRUSTED_GATEWAY_SECRET`), when it is on.
    pub gateway: Option<web::extract::Gateway>,
    /// The first-generation investment routes (`APP_LEGACY_INVEST_API=true`,
    /// with `APP_TRUSTED_GATEWAY_SECRET`), when they are on.
    pub legacy_invest: Option<web::LegacyInvest>,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub db_pool_size: usize,
    pub redis_pool_size: usize,
    /// Bounds connecting to and waiting for Postgres and Redis.
    pub dependency_timeout: Duration,
    pub statement_timeout: Duration,
    /// How long start-up keeps retrying an unreachable Postgres.
    pub startup_timeout: Duration,
    pub redis_key_prefix: String,
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub json_body_limit: usize,
    /// How long idempotent responses are replayed (at least 24 h).
    pub idempotency_retention: Duration,
    /// Approximate cap on the order event stream's length.
    pub events_max_len: usize,
    /// Order events on Kafka as well (`APP_KAFKA_BROKERS`); `None`: the
    /// Redis stream only.
    pub kafka: Option<infra::kafka::KafkaSettings>,
    /// When the daily coupon expiry notices go out (UTC).
    pub notice_time: chrono::NaiveTime,
    /// How long a notice run's claim on a notice holds; a claim older than
    /// this (its run died or stalled before marking) is taken again.
    pub notice_claim_ttl: Duration,
    /// Seed demo products, a coupon campaign and an investment product into
    /// an empty database at start-up.
    pub demo_data: bool,
    /// Sign-in and per-user attempt quotas (`APP_SIGNIN_LIMIT_PER_LOGIN`,
    /// `APP_SIGNIN_LIMIT_PER_ADDRESS`, `APP_ATTEMPT_LIMIT_PER_USER`).
    pub limits: application::throttle::Limits,
    /// Trusted proxies in front that append to `X-Forwarded-For`.
    pub proxy_hops: usize,
    /// The money writes' in-flight bounds (`APP_MAX_IN_FLIGHT`, per family
    /// `APP_MAX_IN_FLIGHT_ORDERS` … ; `APP_ADMISSION_WAIT`).
    pub admission: web::AdmissionLimits,
    /// The shared read cache's bound (`APP_READ_CACHE_BOUND`, default 1s,
    /// at most 1m): the oldest answer a cached read gives (docs/caching.md).
    /// `None` (`off`) reads everything from Postgres.
    pub read_cache_bound: Option<Duration>,
}

/// Money writes of one family in flight on one instance, unless
/// `APP_MAX_IN_FLIGHT` or the family's own variable says otherwise
/// (`docs/reliability.md`, "Overload").
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

impl Config {
    /// The Redis pool this configuration names: the cluster's nodes when
    /// `APP_REDIS_CLUSTER_NODES` is set, else `REDIS_URL` with up to
    /// `max_size` connections per thread.
    ///
    /// # Errors
    /// When the URL or a node address is unusable.
    pub fn redis_pool(&self, max_size: usize) -> anyhow::Result<infra::redis::RedisPool> {
        match &self.redis_cluster_nodes {
            Some(nodes) => infra::redis::connect_cluster(nodes, self.dependency_timeout),
            None => infra::redis::connect_pool(&infra::redis::RedisPoolSettings {
                url: self.redis_url.clone(),
                max_size,
                timeout: self.dependency_timeout,
            }),
        }
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unusable variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unusable variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let database_url = get("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/points_commerce".to_owned());
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(invalid("DATABASE_URL", "must be a postgres:// URL"));
        }
        let redis_url = get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
        if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
            return Err(invalid("REDIS_URL", "must be a redis:// URL"));
        }
        let redis_cluster_nodes = get("APP_REDIS_CLUSTER_NODES")
            .map(|raw| {
                host_ports(
                    "APP_REDIS_CLUSTER_NODES",
                    &raw,
                    "10.0.0.1:7000,10.0.0.2:7000",
                )
            })
            .transpose()?;
        let http_addr = get("APP_HTTP_ADDR")
            .unwrap_or_else(|| "0.0.0.0:8080".to_owned())
            .parse()
            .map_err(|_| invalid("APP_HTTP_ADDR", "must be host:port, e.g. 0.0.0.0:8080"))?;
        let jwt_secret = get("APP_JWT_SECRET")
            .map(|s| JwtSecret::new(s.into_bytes()))
            .transpose()
            .map_err(|e| invalid("APP_JWT_SECRET", e.to_string()))?;
        let jwt_ttl = duration(&get, "APP_JWT_TTL", "1h")?;
        let notice_claim_ttl = duration(&get, "APP_NOTICE_CLAIM_TTL", "10m")?;
        if notice_claim_ttl < Duration::from_secs(1)
            || notice_claim_ttl > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "APP_NOTICE_CLAIM_TTL",
                "must be between 1s and 24h",
            ));
        }
        if jwt_ttl < Duration::from_secs(60) || jwt_ttl > Duration::from_secs(30 * 24 * 3600) {
            return Err(invalid("APP_JWT_TTL", "must be between 1m and 30d"));
        }
        let admin = match (get("APP_ADMIN_LOGIN_ID"), lookup("APP_ADMIN_PASSWORD")) {
            (None, None) => None,
            (Some(login), Some(password)) => Some(AdminBootstrap {
                login_id: LoginId::parse(&login)
                    .map_err(|e| invalid("APP_ADMIN_LOGIN_ID", e.to_string()))?,
                password: Password::parse(&password)
                    .map_err(|e| invalid("APP_ADMIN_PASSWORD", e.to_string()))?,
            }),
            (Some(_), None) => {
                return Err(invalid(
                    "APP_ADMIN_PASSWORD",
                    "must be set with APP_ADMIN_LOGIN_ID",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "APP_ADMIN_LOGIN_ID",
                    "must be set with APP_ADMIN_PASSWORD",
                ));
            }
        };
        let trusted_user_header = get("APP_TRUSTED_USER_HEADER")
            .map(|h| HeaderName::try_from(h.trim()))
            .transpose()
            .map_err(|_| invalid("APP_TRUSTED_USER_HEADER", "must be a valid header name"))?;
        let gateway_secret = get("APP_TRUSTED_GATEWAY_SECRET")
            .map(|s| web::extract::GatewaySecret::new(s.into_bytes()))
            .transpose()
            .map_err(|e| invalid("APP_TRUSTED_GATEWAY_SECRET", e))?;
        let legacy_invest_on = flag(&get, "APP_LEGACY_INVEST_API")?;
        let needs_secret = |mode: &str| {
            invalid(
                "APP_TRUSTED_GATEWAY_SECRET",
                format!(
                    "is required by {mode}: the secret the gateway sends in X-Gateway-Secret, \
                     at least 32 bytes"
                ),
            )
        };
        let legacy_invest = match (legacy_invest_on, &gateway_secret) {
            (true, Some(secret)) => Some(web::LegacyInvest {
                secret: secret.clone(),
            }),
            (true, None) => {
                return Err(needs_secret(
                    "the first-generation invest API (APP_LEGACY_INVEST_API)",
                ));
            }
            (false, _) => None,
        };
        let gateway = match (trusted_user_header, gateway_secret) {
            (Some(user_header), Some(secret)) => Some(web::extract::Gateway {
                user_header,
                secret,
            }),
            (Some(_), None) => {
                return Err(needs_secret(
                    "trusted-gateway mode (APP_TRUSTED_USER_HEADER)",
                ));
            }
            (None, _) => None,
        };
        let log_format = match get("APP_LOG_FORMAT").as_deref().unwrap_or("json") {
            "json" => LogFormat::Json,
            "text" | "pretty" => LogFormat::Text,
            _ => return Err(invalid("APP_LOG_FORMAT", "must be json or text")),
        };
        let idempotency_retention = duration(&get, "APP_IDEMPOTENCY_RETENTION", "24h")?;
        if idempotency_retention < Duration::from_secs(24 * 3600) {
            return Err(invalid("APP_IDEMPOTENCY_RETENTION", "must be at least 24h"));
        }
        let default_workers = std::thread::available_parallelism().map_or(2, usize::from);

        Ok(Self {
            database_url,
            redis_url,
            redis_cluster_nodes,
            http_addr,
            jwt_secret,
            jwt_ttl,
            admin,
            gateway,
            legacy_invest,
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format,
            db_pool_size: number(&get, "APP_DB_POOL_SIZE", 16, 1..=1000)?,
            redis_pool_size: number(&get, "APP_REDIS_POOL_SIZE", 16, 1..=1000)?,
            dependency_timeout: duration(&get, "APP_DEPENDENCY_TIMEOUT", "2s")?,
            statement_timeout: duration(&get, "APP_STATEMENT_TIMEOUT", "5s")?,
            startup_timeout: duration(&get, "APP_STARTUP_TIMEOUT", "30s")?,
            redis_key_prefix: get("APP_REDIS_KEY_PREFIX").unwrap_or_default(),
            workers: number(&get, "APP_WORKERS", default_workers, 1..=256)?,
            shutdown_timeout: duration(&get, "APP_SHUTDOWN_TIMEOUT", "30s")?,
            json_body_limit: number(
                &get,
                "APP_JSON_BODY_LIMIT",
                64 * 1024,
                1024..=16 * 1024 * 1024,
            )?,
            idempotency_retention,
            events_max_len: number(&get, "APP_EVENTS_MAX_LEN", 1_000_000, 1_000..=100_000_000)?,
            kafka: kafka(&get)?,
            notice_time: chrono::NaiveTime::parse_from_str(
                get("APP_NOTICE_TIME").as_deref().unwrap_or("09:00"),
                "%H:%M",
            )
            .map_err(|_| invalid("APP_NOTICE_TIME", "must be HH:MM (UTC)"))?,
            notice_claim_ttl,
            demo_data: flag(&get, "APP_DEMO_DATA")?,
            read_cache_bound: read_cache_bound(&get)?,
            limits: application::throttle::Limits {
                sign_in_per_login: quota(&get, "APP_SIGNIN_LIMIT_PER_LOGIN", "10/5m")?,
                sign_in_per_address: quota(&get, "APP_SIGNIN_LIMIT_PER_ADDRESS", "100/5m")?,
                attempts_per_user: quota(&get, "APP_ATTEMPT_LIMIT_PER_USER", "300/1m")?,
            },
            proxy_hops: number(&get, "APP_PROXY_HOPS", 0, 0..=10)?,
            admission: admission(&get, {
                // One Postgres operation may take both; a money write waits
                // at most that in all (domain::deadline).
                duration(&get, "APP_DEPENDENCY_TIMEOUT", "2s")?
                    + duration(&get, "APP_STATEMENT_TIMEOUT", "5s")?
            })?,
        })
    }
}

/// The in-flight bounds: `APP_MAX_IN_FLIGHT` for every family, each
/// family's own variable over it; and the wait for a place.
fn admission(
    get: &impl Fn(&str) -> Option<String>,
    budget: Duration,
) -> Result<web::AdmissionLimits, ConfigError> {
    let all = bound(get, "APP_MAX_IN_FLIGHT", Some(DEFAULT_MAX_IN_FLIGHT))?;
    let wait = match get("APP_ADMISSION_WAIT").as_deref().map(str::trim) {
        Some("0") => Duration::ZERO,
        _ => duration(get, "APP_ADMISSION_WAIT", "20ms")?,
    };
    if wait > Duration::from_secs(1) {
        return Err(invalid(
            "APP_ADMISSION_WAIT",
            "must be at most 1s (0 sheds at once)",
        ));
    }
    Ok(web::AdmissionLimits {
        orders: bound(get, "APP_MAX_IN_FLIGHT_ORDERS", all)?,
        investments: bound(get, "APP_MAX_IN_FLIGHT_INVESTMENTS", all)?,
        charges: bound(get, "APP_MAX_IN_FLIGHT_CHARGES", all)?,
        coupon_issues: bound(get, "APP_MAX_IN_FLIGHT_COUPON_ISSUES", all)?,
        wait,
        budget: Some(budget),
    })
}

/// A bound on requests in flight (1..=1,000,000), or `off` (`None`).
fn bound(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Option<usize>,
) -> Result<Option<usize>, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(raw) if raw.trim().eq_ignore_ascii_case("off") => Ok(None),
        Some(_) => number(get, var, 0, 1..=1_000_000).map(Some),
    }
}

/// `APP_KAFKA_BROKERS` (`host:port[,…]`) and its companions, when set.
fn kafka(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<infra::kafka::KafkaSettings>, ConfigError> {
    let Some(brokers) = get("APP_KAFKA_BROKERS") else {
        return Ok(None);
    };
    let brokers = host_ports("APP_KAFKA_BROKERS", &brokers, "127.0.0.1:9092")?.join(",");
    let partitions = number(get, "APP_KAFKA_PARTITIONS", 3, 1..=1000)?;
    let replication = number(get, "APP_KAFKA_REPLICATION", 1, 1..=16)?;
    let timeout = duration(get, "APP_KAFKA_TIMEOUT", "5s")?;
    let settings = infra::kafka::KafkaSettings::new(
        &brokers,
        i32::try_from(partitions).unwrap_or(i32::MAX),
        i16::try_from(replication).unwrap_or(i16::MAX),
        timeout,
    );
    Ok(Some(settings))
}

/// A comma-separated `host:port` list (blanks around entries ignored), at
/// least one.
fn host_ports(var: &'static str, raw: &str, example: &str) -> Result<Vec<String>, ConfigError> {
    let entries: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let well_formed = entries.iter().all(|e| {
        e.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    if entries.is_empty() || !well_formed {
        return Err(invalid(
            var,
            format!("must be host:port[,host:port...], e.g. {example}"),
        ));
    }
    Ok(entries)
}

/// A duration as humantime (`90s`, `15m`, `1h`) or plain seconds.
fn duration(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = get(var).unwrap_or_else(|| default.to_owned());
    let parsed = match raw.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw.trim())
            .map_err(|_| invalid(var, "must be a duration such as 30s, 15m or 1h"))?,
    };
    if parsed.is_zero() {
        return Err(invalid(var, "must be greater than zero"));
    }
    Ok(parsed)
}

/// A quota as `LIMIT/PERIOD` (`10/5m`: ten per five minutes), or `off`.
fn quota(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Option<domain::throttle::Quota>, ConfigError> {
    let raw = get(var).unwrap_or_else(|| default.to_owned());
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let shape = "must be LIMIT/PERIOD such as 10/5m, or off";
    let (limit, period) = raw.split_once('/').ok_or_else(|| invalid(var, shape))?;
    let limit: u32 = limit.trim().parse().map_err(|_| invalid(var, shape))?;
    let period = humantime::parse_duration(period.trim()).map_err(|_| invalid(var, shape))?;
    domain::throttle::Quota::new(limit, period)
        .map(Some)
        .map_err(|e| invalid(var, e.to_string()))
}

/// `APP_READ_CACHE_BOUND`: a duration from 10ms to 1m, or `off`.
fn read_cache_bound(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    const VAR: &str = "APP_READ_CACHE_BOUND";
    if get(VAR).is_some_and(|v| v.trim() == "off") {
        return Ok(None);
    }
    let bound = duration(get, VAR, "1s")?;
    if bound < Duration::from_millis(10) || bound > Duration::from_secs(60) {
        return Err(invalid(VAR, "must be between 10ms and 1m, or off"));
    }
    Ok(Some(bound))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`); unset is `false`.
fn flag(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match get(var).as_deref().map(str::trim) {
        None | Some("" | "false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(invalid(var, "must be true or false")),
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let value = match get(var) {
        None => default,
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| invalid(var, "must be a whole number"))?,
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            var,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.http_addr.port(), 8080);
        assert!(c.database_url.starts_with("postgres://"));
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert!(c.redis_cluster_nodes.is_none(), "one Redis unless told");
        assert_eq!(
            config(&[("APP_REDIS_CLUSTER_NODES", "r1:7000, r2:7001")])
                .expect("valid")
                .redis_cluster_nodes,
            Some(vec!["r1:7000".to_owned(), "r2:7001".to_owned()])
        );
        assert!(c.jwt_secret.is_none());
        assert_eq!(c.jwt_ttl, Duration::from_secs(3600));
        assert!(c.admin.is_none() && c.gateway.is_none() && c.legacy_invest.is_none());
        assert!(!c.demo_data, "no demo data unless asked");
        let q = |limit, secs| domain::throttle::Quota::new(limit, Duration::from_secs(secs)).ok();
        assert_eq!(
            c.limits,
            application::throttle::Limits {
                sign_in_per_login: q(10, 300),
                sign_in_per_address: q(100, 300),
                attempts_per_user: q(300, 60),
            }
        );
        assert_eq!(c.proxy_hops, 0);
        assert_eq!(
            c.admission,
            web::AdmissionLimits {
                orders: Some(DEFAULT_MAX_IN_FLIGHT),
                investments: Some(DEFAULT_MAX_IN_FLIGHT),
                charges: Some(DEFAULT_MAX_IN_FLIGHT),
                coupon_issues: Some(DEFAULT_MAX_IN_FLIGHT),
                wait: Duration::from_millis(20),
                budget: Some(Duration::from_secs(7)),
            }
        );
        assert_eq!(c.notice_claim_ttl, Duration::from_secs(600));
        assert_eq!(
            config(&[("APP_NOTICE_CLAIM_TTL", "2")])
                .expect("valid")
                .notice_claim_ttl,
            Duration::from_secs(2),
            "tests set seconds"
        );
        assert!(
            config(&[("APP_DEMO_DATA", "true")])
                .expect("valid")
                .demo_data
        );
    }

    #[test]
    fn a_short_jwt_secret_is_refused_by_name() {
        let err = config(&[("APP_JWT_SECRET", "too-short")]).expect_err("refused");
        assert_eq!(err.var, "APP_JWT_SECRET");
        assert!(err.to_string().contains("at least 32 bytes"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("APP_HTTP_ADDR", "not-an-address"),
            ("APP_JWT_TTL", "forever"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://x"),
            ("APP_TRUSTED_USER_HEADER", "bad header"),
            ("APP_LOG_FORMAT", "xml"),
            ("APP_DB_POOL_SIZE", "0"),
            ("APP_IDEMPOTENCY_RETENTION", "1h"),
            ("APP_NOTICE_TIME", "25:00"),
            ("APP_NOTICE_CLAIM_TTL", "0s"),
            ("APP_NOTICE_CLAIM_TTL", "2d"),
            ("APP_DEMO_DATA", "maybe"),
            ("APP_SIGNIN_LIMIT_PER_LOGIN", "10"),
            ("APP_SIGNIN_LIMIT_PER_ADDRESS", "0/1m"),
            ("APP_ATTEMPT_LIMIT_PER_USER", "5/forever"),
            ("APP_ATTEMPT_LIMIT_PER_USER", "5/2d"),
            ("APP_PROXY_HOPS", "11"),
            ("APP_KAFKA_BROKERS", "no-port"),
            ("APP_KAFKA_BROKERS", "host:99999"),
            ("APP_KAFKA_BROKERS", ",,"),
            ("APP_REDIS_CLUSTER_NODES", "a,b"),
            ("APP_REDIS_CLUSTER_NODES", "h:70000"),
        ] {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{var}={value}");
        }
        let err = config(&[
            ("APP_KAFKA_BROKERS", "k:9092"),
            ("APP_KAFKA_PARTITIONS", "0"),
        ])
        .expect_err("no partitions");
        assert_eq!(err.var, "APP_KAFKA_PARTITIONS");
    }

    #[test]
    fn gateway_mode_needs_a_secret_of_32_bytes() {
        for vars in [
            vec![("APP_TRUSTED_USER_HEADER", "X-USER-ID")],
            vec![
                ("APP_TRUSTED_USER_HEADER", "X-USER-ID"),
                (
                    "APP_TRUSTED_GATEWAY_SECRET",
                    "31-bytes-0123456789012345678901",
                ),
            ],
        ] {
            let err = config(&vars).expect_err("refused");
            assert_eq!(err.var, "APP_TRUSTED_GATEWAY_SECRET", "{vars:?}");
        }
        let gateway = config(&[
            ("APP_TRUSTED_USER_HEADER", "X-USER-ID"),
            (
                "APP_TRUSTED_GATEWAY_SECRET",
                "32-bytes-01234567890123456789012",
            ),
        ])
        .expect("valid")
        .gateway
        .expect("on");
        assert_eq!(gateway.user_header.as_str(), "x-user-id");
        assert!(gateway.secret.matches(b"32-bytes-01234567890123456789012"));
        assert!(!gateway.secret.matches(b"32-bytes-01234567890123456789013"));
        assert!(
            !format!("{gateway:?}").contains("32-bytes"),
            "never printed"
        );
        // The first-generation invest API needs it too.
        let err = config(&[("APP_LEGACY_INVEST_API", "true")]).expect_err("refused");
        assert_eq!(err.var, "APP_TRUSTED_GATEWAY_SECRET");
        assert!(
            config(&[
                ("APP_LEGACY_INVEST_API", "true"),
                (
                    "APP_TRUSTED_GATEWAY_SECRET",
                    "32-bytes-01234567890123456789012"
                ),
            ])
            .expect("valid")
            .legacy_invest
            .is_some()
        );
        // A secret alone turns nothing on.
        assert!(
            config(&[(
                "APP_TRUSTED_GATEWAY_SECRET",
                "32-bytes-01234567890123456789012"
            )])
            .expect("valid")
            .gateway
            .is_none()
        );
    }

    #[test]
    fn kafka_is_off_unless_brokers_are_given() {
        assert!(config(&[]).expect("valid").kafka.is_none());
        let kafka = config(&[("APP_KAFKA_BROKERS", "k1:9092, k2:9093")])
            .expect("valid")
            .kafka
            .expect("on");
        assert_eq!(kafka.brokers, ["k1:9092", "k2:9093"]);
        assert_eq!(kafka.topic, "order-events");
        assert_eq!((kafka.partitions, kafka.replication), (3, 1));
        assert_eq!(kafka.timeout, Duration::from_secs(5));
    }

    #[test]
    fn limits_read_limit_per_period_or_off() {
        let c = config(&[
            ("APP_ATTEMPT_LIMIT_PER_USER", "off"),
            ("APP_SIGNIN_LIMIT_PER_LOGIN", " 3 / 90s "),
            ("APP_PROXY_HOPS", "1"),
        ])
        .expect("valid");
        assert_eq!(c.limits.attempts_per_user, None);
        assert_eq!(
            c.limits.sign_in_per_login,
            domain::throttle::Quota::new(3, Duration::from_secs(90)).ok()
        );
        assert_eq!(c.proxy_hops, 1);
    }

    #[test]
    fn admin_credentials_come_in_pairs_and_are_validated() {
        assert_eq!(
            config(&[("APP_ADMIN_LOGIN_ID", "admin")])
                .expect_err("half")
                .var,
            "APP_ADMIN_PASSWORD"
        );
        assert_eq!(
            config(&[
                ("APP_ADMIN_LOGIN_ID", "admin"),
                ("APP_ADMIN_PASSWORD", "short")
            ])
            .expect_err("weak")
            .var,
            "APP_ADMIN_PASSWORD"
        );
        let c = config(&[
            ("APP_ADMIN_LOGIN_ID", "admin"),
            ("APP_ADMIN_PASSWORD", "long enough"),
        ])
        .expect("valid");
        assert_eq!(
            c.admin.map(|a| a.login_id.as_str().to_owned()),
            Some("admin".into())
        );
    }

    #[test]
    fn in_flight_bounds_take_a_number_or_off_and_a_family_overrides_the_rest() {
        let c = config(&[
            ("APP_MAX_IN_FLIGHT", "100"),
            ("APP_MAX_IN_FLIGHT_ORDERS", "7"),
            ("APP_MAX_IN_FLIGHT_CHARGES", "off"),
            ("APP_ADMISSION_WAIT", "0"),
        ])
        .expect("valid");
        assert_eq!(
            c.admission,
            web::AdmissionLimits {
                orders: Some(7),
                investments: Some(100),
                charges: None,
                coupon_issues: Some(100),
                wait: Duration::ZERO,
                budget: Some(Duration::from_secs(7)),
            }
        );
        let off = config(&[("APP_MAX_IN_FLIGHT", "off")]).expect("valid");
        assert_eq!(off.admission.orders, None);
        assert_eq!(
            config(&[("APP_ADMISSION_WAIT", "50ms")])
                .expect("valid")
                .admission
                .wait,
            Duration::from_millis(50)
        );
        for (var, value) in [
            ("APP_MAX_IN_FLIGHT", "0"),
            ("APP_MAX_IN_FLIGHT_INVESTMENTS", "many"),
            ("APP_ADMISSION_WAIT", "2s"),
            ("APP_ADMISSION_WAIT", "soon"),
        ] {
            assert_eq!(config(&[(var, value)]).expect_err(var).var, var);
        }
    }

    #[test]
    fn the_read_cache_bound_defaults_to_a_second_and_can_be_turned_off() {
        let bound = |v: &str| config(&[("APP_READ_CACHE_BOUND", v)]).map(|c| c.read_cache_bound);
        assert_eq!(
            config(&[]).expect("valid").read_cache_bound,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            bound("250ms").expect("valid"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(bound("off").expect("valid"), None);
        for refused in ["5ms", "2m", "soon"] {
            let err = bound(refused).expect_err(refused);
            assert!(err.to_string().contains("APP_READ_CACHE_BOUND"), "{err}");
        }
    }

    #[test]
    fn durations_take_humantime_or_seconds() {
        assert_eq!(
            config(&[("APP_JWT_TTL", "15m")]).expect("valid").jwt_ttl,
            Duration::from_secs(900)
        );
        assert_eq!(
            config(&[("APP_JWT_TTL", "120")]).expect("valid").jwt_ttl,
            Duration::from_secs(120)
        );
    }
}
