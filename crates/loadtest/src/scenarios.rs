//! The scenarios. Each sets itself up through the API (users through the
//! gateway header, points, products, campaigns), fires, then checks the
//! invariants through the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use rand::RngExt as _;
use reqwest::Method;
use serde_json::json;

use crate::api::Api;
use crate::fire::{Check, Fired, Report, burst, count, fire};

/// What every scenario runs with.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub api: Arc<Api>,
    pub connections: usize,
    /// A prefix unique to this run, for login ids, keys and names.
    pub run: String,
    /// Scales every request count (1.0 = the sizes of issue 7).
    pub scale: f64,
}

impl Ctx {
    fn n(&self, full: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(1)
    }

    fn login(&self, tag: &str, i: usize) -> String {
        format!("{}-{tag}-{i}", self.run)
    }

    /// Provisions `n` users (and charges each `charge` points when given),
    /// 64 at a time; not measured.
    pub(crate) async fn users(
        &self,
        tag: &str,
        n: usize,
        charge: Option<i64>,
    ) -> anyhow::Result<Vec<String>> {
        let logins: Arc<Vec<String>> = Arc::new((0..n).map(|i| self.login(tag, i)).collect());
        let api = Arc::clone(&self.api);
        let l = Arc::clone(&logins);
        let fired = fire(n, 64, move |i| {
            let (api, login) = (Arc::clone(&api), l[i].clone());
            async move {
                match charge {
                    Some(amount) => api.charge(&login, amount).await.map(|()| ok()),
                    None => {
                        api.user(Method::GET, "/api/v1/me", &login, None, None)
                            .await
                    }
                }
            }
        })
        .await;
        let ready = fired
            .answers
            .iter()
            .filter(|a| a.as_ref().is_some_and(|a| a.status == 200))
            .count();
        anyhow::ensure!(ready == n, "only {ready} of {n} users could be prepared");
        Ok(Arc::try_unwrap(logins).unwrap_or_else(|l| (*l).clone()))
    }

    /// Sum of the users' balances.
    async fn balances(&self, logins: &[String]) -> anyhow::Result<i64> {
        let api = Arc::clone(&self.api);
        let logins = Arc::new(logins.to_vec());
        let l = Arc::clone(&logins);
        let fired = fire(logins.len(), 64, move |i| {
            let (api, login) = (Arc::clone(&api), l[i].clone());
            async move {
                let balance = api.balance(&login).await?;
                Ok(crate::api::Answer {
                    status: 200,
                    body: json!({ "balance": balance }),
                })
            }
        })
        .await;
        fired
            .answers
            .iter()
            .map(|a| {
                a.as_ref()
                    .and_then(|a| a.body["balance"].as_i64())
                    .context("a balance could not be read")
            })
            .sum()
    }
}

/// Marks on standard error where a scenario's measured part starts, for a
/// profiler or a reader watching the run (setup is not measured).
fn firing(scenario: &str) {
    eprintln!("== firing {scenario}");
}

fn ok() -> crate::api::Answer {
    crate::api::Answer {
        status: 200,
        body: serde_json::Value::Null,
    }
}

/// Only these (status, code) answers, nothing else (no 5xx, no lost answer).
fn only(fired: &Fired, allowed: &[(u16, &str)]) -> Check {
    let mut other: BTreeMap<String, usize> = BTreeMap::new();
    for answer in &fired.answers {
        match answer {
            Some(a)
                if allowed
                    .iter()
                    .any(|(s, c)| a.status == *s && a.code() == *c) => {}
            Some(a) => {
                *other
                    .entry(format!("{} {}", a.status, a.code()))
                    .or_insert(0) += 1
            }
            None => *other.entry("no answer".to_owned()).or_insert(0) += 1,
        }
    }
    Check::that(
        "every answer is an expected one (no 5xx, none lost)",
        other.is_empty(),
        if other.is_empty() {
            "yes".to_owned()
        } else {
            format!("unexpected: {other:?}")
        },
    )
}

pub(crate) async fn product_stock(api: &Api, id: i64) -> anyhow::Result<i64> {
    let a = api
        .admin(Method::GET, &format!("/api/v1/products/{id}"), None)
        .await?;
    a.body["stock"].as_i64().context("stock")
}

/// The framework ceiling: `GET /health/live`.
pub async fn health(ctx: &Ctx) -> anyhow::Result<Report> {
    let api = Arc::clone(&ctx.api);
    firing("health");
    let fired = fire(ctx.n(50_000), ctx.connections, move |_| {
        let api = Arc::clone(&api);
        async move { api.public("/health/live").await }
    })
    .await;
    let mut report = Report::new("health (framework ceiling)", ctx.connections, &fired);
    report.checks.push(only(&fired, &[(200, "")]));
    Ok(report)
}

/// One product with 1,000 units, 20,000 order attempts by 5,000 users.
pub async fn flash_sale(ctx: &Ctx) -> anyhow::Result<Report> {
    let (stock, price) = (ctx.n(1_000) as i64, 1_000);
    let product = ctx
        .api
        .create_product(&format!("flash {}", ctx.run), price, stock)
        .await?;
    let users = Arc::new(ctx.users("fs", ctx.n(5_000), Some(4 * price)).await?);
    let before = ctx.balances(&users).await?;
    let (api, u, run) = (Arc::clone(&ctx.api), Arc::clone(&users), ctx.run.clone());
    firing("flash-sale");
    let fired = fire(ctx.n(20_000), ctx.connections, move |i| {
        let (api, login) = (Arc::clone(&api), u[i % u.len()].clone());
        let key = format!("{run}-fs-{i}");
        async move {
            let body = json!({"items": [{"productId": product, "quantity": 1}]});
            api.fire_user(
                Method::POST,
                "/api/v1/orders",
                &login,
                Some(&key),
                Some(&body),
            )
            .await
        }
    })
    .await;
    let mut report = Report::new("flash-sale", ctx.connections, &fired);
    let paid = count(&fired, 201);
    report
        .checks
        .push(Check::eq("orders paid = stock", paid as i64, stock));
    report.checks.push(Check::eq(
        "stock left",
        product_stock(&ctx.api, product).await?,
        0,
    ));
    let taken = before - ctx.balances(&users).await?;
    report.checks.push(Check::eq(
        "money taken = stock × price",
        taken,
        stock * price,
    ));
    report
        .checks
        .push(only(&fired, &[(201, ""), (409, "OUT_OF_STOCK")]));
    Ok(report)
}

/// A pool of 1,000 codes, 50,000 issue attempts by 20,000 users.
pub async fn coupon_rush(ctx: &Ctx) -> anyhow::Result<Report> {
    let codes = ctx.n(1_000) as i64;
    let campaign = ctx
        .api
        .admin(
            Method::POST,
            "/api/v1/admin/coupon-campaigns",
            Some(&json!({"name": format!("rush {}", ctx.run), "discountType": "AMOUNT", "discountValue": 1_000, "validDays": 7})),
        )
        .await?;
    let id = campaign.body["id"].as_i64().context("campaign id")?;
    let generated = ctx
        .api
        .admin(
            Method::POST,
            &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
            Some(&json!({"count": codes})),
        )
        .await?;
    anyhow::ensure!(
        generated.status < 300,
        "generating codes: {}",
        generated.body
    );
    let users = Arc::new(ctx.users("cr", ctx.n(20_000), None).await?);
    let (api, u) = (Arc::clone(&ctx.api), Arc::clone(&users));
    firing("coupon-rush");
    let fired = fire(ctx.n(50_000), ctx.connections, move |i| {
        let (api, login) = (Arc::clone(&api), u[i % u.len()].clone());
        async move {
            api.fire_user(
                Method::POST,
                &format!("/api/v1/coupon-campaigns/{id}/issue"),
                &login,
                None,
                None,
            )
            .await
        }
    })
    .await;
    let mut report = Report::new("coupon-rush", ctx.connections, &fired);
    let issued = count(&fired, 201);
    report
        .checks
        .push(Check::eq("coupons issued = pool", issued as i64, codes));
    let holders: BTreeSet<usize> = fired
        .answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.as_ref().is_some_and(|a| a.status == 201))
        .map(|(i, _)| i % users.len())
        .collect();
    report
        .checks
        .push(Check::eq("one coupon per user", holders.len(), issued));
    let view = ctx
        .api
        .admin(Method::GET, &format!("/api/v1/coupon-campaigns/{id}"), None)
        .await?;
    report.checks.push(Check::eq(
        "campaign issuedCount",
        view.body["issuedCount"].as_i64(),
        Some(codes),
    ));
    report.checks.push(only(
        &fired,
        &[
            (201, ""),
            (409, "COUPON_SOLD_OUT"),
            (409, "COUPON_ALREADY_ISSUED"),
        ],
    ));
    Ok(report)
}

/// A product of 10,000,000; 20,000 investments of 100..=1,000 by 5,000 users.
pub async fn invest_rush(ctx: &Ctx) -> anyhow::Result<Report> {
    let total = 10_000_000_f64 * ctx.scale;
    let total = (total.round() as i64).max(1_000);
    let now = chrono::Utc::now();
    let created = ctx
        .api
        .admin(
            Method::POST,
            "/api/v1/admin/invest-products",
            Some(&json!({
                "title": format!("rush {}", ctx.run),
                "totalInvestingAmount": total,
                "startedAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "finishedAt": (now + chrono::Duration::days(1)).to_rfc3339(),
            })),
        )
        .await?;
    let product = created.body["productId"]
        .as_i64()
        .context("invest product id")?;
    let users = Arc::new(ctx.users("ir", ctx.n(5_000), None).await?);
    let attempts = ctx.n(20_000);
    let mut rng = rand::rng();
    let amounts: Arc<Vec<i64>> = Arc::new(
        (0..attempts)
            .map(|_| rng.random_range(100..=1_000))
            .collect(),
    );
    let (api, u, a, run) = (
        Arc::clone(&ctx.api),
        Arc::clone(&users),
        Arc::clone(&amounts),
        ctx.run.clone(),
    );
    firing("invest-rush");
    let fired = fire(attempts, ctx.connections, move |i| {
        let (api, login) = (Arc::clone(&api), u[i % u.len()].clone());
        let body = json!({"productId": product, "investAmount": a[i]});
        let key = format!("{run}-ir-{i}");
        async move {
            api.fire_user(
                Method::POST,
                "/api/v1/investments",
                &login,
                Some(&key),
                Some(&body),
            )
            .await
        }
    })
    .await;
    let mut report = Report::new("invest-rush", ctx.connections, &fired);
    let accepted: Vec<usize> = (0..attempts)
        .filter(|i| fired.answers[*i].as_ref().is_some_and(|a| a.status == 201))
        .collect();
    let sum: i64 = accepted.iter().map(|i| amounts[*i]).sum();
    let investors: BTreeSet<usize> = accepted.iter().map(|i| i % users.len()).collect();
    let view = ctx
        .api
        .admin(
            Method::GET,
            &format!("/api/v1/invest-products/{product}"),
            None,
        )
        .await?;
    let current = view.body["currentInvestingAmount"]
        .as_i64()
        .context("current")?;
    report.checks.push(Check::that(
        "never over the target",
        current <= total,
        format!("{current} of {total}"),
    ));
    report.checks.push(Check::eq(
        "accepted amounts = currentInvestingAmount",
        sum,
        current,
    ));
    report.checks.push(Check::eq(
        "investingCnt = distinct accepted investors",
        view.body["investingCnt"].as_i64(),
        Some(investors.len() as i64),
    ));
    report.checks.push(only(
        &fired,
        &[
            (201, ""),
            (409, "SOLD_OUT"),
            (409, "AMOUNT_EXCEEDS_REMAINING"),
        ],
    ));
    Ok(report)
}

/// Uncontended orders: 100 products with plenty of stock, 1,000 buyers.
pub async fn orders(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut products = Vec::new();
    for p in 0..100 {
        products.push(
            ctx.api
                .create_product(&format!("shelf {} {p}", ctx.run), 100, 1_000_000)
                .await?,
        );
    }
    let products = Arc::new(products);
    let users = Arc::new(ctx.users("or", ctx.n(1_000), Some(1_000_000)).await?);
    let attempts = ctx.n(20_000);
    let (api, u, p, run) = (
        Arc::clone(&ctx.api),
        Arc::clone(&users),
        Arc::clone(&products),
        ctx.run.clone(),
    );
    firing("orders");
    let fired = fire(attempts, ctx.connections, move |i| {
        let (api, login) = (Arc::clone(&api), u[i % u.len()].clone());
        let body = json!({"items": [{"productId": p[i % p.len()], "quantity": 1}]});
        let key = format!("{run}-or-{i}");
        async move {
            api.fire_user(
                Method::POST,
                "/api/v1/orders",
                &login,
                Some(&key),
                Some(&body),
            )
            .await
        }
    })
    .await;
    let mut report = Report::new("orders (uncontended)", ctx.connections, &fired);
    report
        .checks
        .push(Check::eq("every order paid", count(&fired, 201), attempts));
    let mut sold = 0;
    for id in products.iter() {
        sold += 1_000_000 - product_stock(&ctx.api, *id).await?;
    }
    report
        .checks
        .push(Check::eq("units taken = orders", sold, attempts as i64));
    report.checks.push(only(&fired, &[(201, "")]));
    Ok(report)
}

/// Product list and detail reads.
pub async fn catalog(ctx: &Ctx) -> anyhow::Result<Report> {
    let product = ctx
        .api
        .create_product(&format!("browse {}", ctx.run), 100, 10)
        .await?;
    let reader = ctx.users("ca", 1, None).await?.remove(0);
    let api = Arc::clone(&ctx.api);
    firing("catalog");
    let fired = fire(ctx.n(50_000), ctx.connections, move |i| {
        let (api, reader) = (Arc::clone(&api), reader.clone());
        let path = if i % 2 == 0 {
            format!("/api/v1/products?page={}&size=20", i % 5)
        } else {
            format!("/api/v1/products/{product}")
        };
        async move { api.fire_user(Method::GET, &path, &reader, None, None).await }
    })
    .await;
    let mut report = Report::new("catalog", ctx.connections, &fired);
    report.checks.push(only(&fired, &[(200, "")]));
    Ok(report)
}

/// The catalogue's reads as a shop front makes them, spread over every
/// `--base` (instances of one deployment): a page of products (with its
/// `totalCount`), a product, the popular list and a campaign's counts, a
/// quarter each. For measuring the shared read cache
/// (`scripts/read-cache-bench.sh`); not part of `all`.
pub async fn reads(ctx: &Ctx) -> anyhow::Result<Report> {
    let product = ctx
        .api
        .create_product(&format!("front {}", ctx.run), 100, 10)
        .await?;
    let campaign = ctx
        .api
        .admin(
            Method::POST,
            "/api/v1/admin/coupon-campaigns",
            Some(&json!({"name": format!("front {}", ctx.run), "discountType": "AMOUNT", "discountValue": 1_000, "validDays": 7})),
        )
        .await?;
    let campaign = campaign.body["id"].as_i64().context("campaign id")?;
    let generated = ctx
        .api
        .admin(
            Method::POST,
            &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes"),
            Some(&json!({"count": 100_000})),
        )
        .await?;
    anyhow::ensure!(
        generated.status < 300,
        "generating codes: {}",
        generated.body
    );
    let reader = ctx.users("rd", 1, None).await?.remove(0);
    let api = Arc::clone(&ctx.api);
    firing("reads");
    let fired = fire(ctx.n(100_000), ctx.connections, move |i| {
        let (api, reader) = (Arc::clone(&api), reader.clone());
        let path = match i % 4 {
            0 => format!("/api/v1/products?page={}&size=20", i % 5),
            1 => format!("/api/v1/products/{product}"),
            2 => "/api/v1/products/popular".to_owned(),
            _ => format!("/api/v1/coupon-campaigns/{campaign}"),
        };
        async move { api.fire_user(Method::GET, &path, &reader, None, None).await }
    })
    .await;
    let mut report = Report::new("reads", ctx.connections, &fired);
    report.checks.push(only(&fired, &[(200, "")]));
    Ok(report)
}

/// 100 simultaneous orders for a product with stock 100.
pub async fn burst_100(ctx: &Ctx) -> anyhow::Result<Report> {
    let product = ctx
        .api
        .create_product(&format!("burst {}", ctx.run), 1_000, 101)
        .await?;
    let users = Arc::new(ctx.users("b", 101, Some(1_000)).await?);
    // Warm the keep-alive connections, the gate and the order path (one
    // order of the 101 units), so the burst measures 100 orders for 100
    // units, not TCP handshakes, the first counter rebuild or statements
    // being prepared.
    let warm_order = ctx
        .api
        .user(
            Method::POST,
            "/api/v1/orders",
            &users[100],
            Some(&format!("{}-b-warm", ctx.run)),
            Some(&json!({"items": [{"productId": product, "quantity": 1}]})),
        )
        .await?;
    anyhow::ensure!(
        warm_order.status == 201,
        "the warm-up order failed: {}",
        warm_order.body
    );
    let warm = fire(100, 100, {
        let (api, u) = (Arc::clone(&ctx.api), Arc::clone(&users));
        move |i| {
            let (api, login) = (Arc::clone(&api), u[i].clone());
            async move {
                api.user(Method::GET, "/api/v1/points", &login, None, None)
                    .await
            }
        }
    })
    .await;
    anyhow::ensure!(count(&warm, 200) == 100, "warming up failed");
    let _ = ctx
        .api
        .admin(Method::GET, &format!("/api/v1/products/{product}"), None)
        .await?;
    let (api, u, run) = (Arc::clone(&ctx.api), Arc::clone(&users), ctx.run.clone());
    firing("burst-100");
    let fired = burst(100, move |i| {
        let (api, login) = (Arc::clone(&api), u[i].clone());
        let key = format!("{run}-b-{i}");
        async move {
            let body = json!({"items": [{"productId": product, "quantity": 1}]});
            api.fire_user(
                Method::POST,
                "/api/v1/orders",
                &login,
                Some(&key),
                Some(&body),
            )
            .await
        }
    })
    .await;
    let mut report = Report::new("burst-100", 100, &fired);
    report.notes.insert(
        "first send to last answer".to_owned(),
        format!("{:.1} ms", fired.elapsed.as_secs_f64() * 1000.0),
    );
    report
        .checks
        .push(Check::eq("orders paid", count(&fired, 201), 100));
    report.checks.push(Check::eq(
        "stock left",
        product_stock(&ctx.api, product).await?,
        0,
    ));
    report.checks.push(only(&fired, &[(201, "")]));
    Ok(report)
}
