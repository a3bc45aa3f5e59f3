//! Composition root: the only place that knows every adapter and use case.

use std::sync::Arc;

use anyhow::Context;
use application::catalog::{CatalogQueries, CreateProduct, PopularProducts, UpdateProduct};
use application::coupon::{
    CampaignQueries, CancelCouponUse, CouponQueries, CreateCampaign, ExpiringCoupons,
    GenerateCodes, ImportCodes, IssueCoupon, SendExpiryNotices, UseCoupon,
};
use application::events::RelayOutbox;
use application::identity::{Authenticate, BootstrapAdmin, SignIn, SignUp, UserQueries};
use application::invest::{CreateInvestProduct, InvestQueries, MakeInvestment};
use application::ordering::{OrderQueries, PlaceOrder};
use application::points::{ChargePoints, PointsQueries};
use application::throttle::Throttle;
use domain::catalog::CatalogStore;
use domain::clock::Clock;
use domain::coupon::CouponStore;
use domain::events::Sink;
use domain::health::HealthProbe;
use domain::idempotency::FastRefusals;
use domain::identity::{PasswordHasher, TokenService, UserRepository};
use domain::ordering::OrderStore;
use domain::ordering::StockGate;
use domain::points::PointsStore;
use infra::auth::{Argon2Hasher, JwtSecret, JwtTokenService};
use infra::cached::{CachedCatalog, CachedCoupons};
use infra::clock::SystemClock;
use infra::postgres::{
    self, PgCatalogStore, PgCouponQuotes, PgCouponStore, PgExpiryStore, PgIdempotencyStore,
    PgInvestStore, PgOrderStore, PgOutbox, PgPointsStore, PgPoolSettings, PgSalesRanking,
    PgUserRepository, PostgresProbe,
};
use infra::redis::{
    self, LocalRateLimiter, ReadCache, RedisEventStream, RedisInvestGate, RedisIssueGate,
    RedisKeys, RedisLock, RedisProbe, RedisRateLimiter, RedisSalesRanking, RedisStockGate,
};
use infra::thread_sets::share_per_thread;
use web::{
    AuthContext, CacheCountsFn, CatalogApi, CouponApi, IdentityApi, InvestApi, JsonLimit, Metrics,
    MetricsApi, OrderingApi, PointsApi, PoolStatus, PoolStatusFn, ProxyHops, Readiness, WebState,
};

use crate::config::Config;

/// What `wiring` hands to the application: the web state, and the pieces the
/// background jobs run.
pub(crate) struct Components {
    pub web: WebState,
    pub jobs: crate::jobs::JobDeps,
}

pub(crate) async fn build(config: &Config) -> anyhow::Result<Components> {
    // Each thread keeps connections of its own (infra::thread_sets); the
    // configured sizes are shared out among the server's worker threads.
    let pg = postgres::connect_pool_per_thread(&PgPoolSettings {
        url: config.database_url.clone(),
        max_size: share_per_thread(config.db_pool_size, config.workers),
        timeout: config.dependency_timeout,
        statement_timeout: config.statement_timeout,
    })?;
    let redis_pool = config.redis_pool(share_per_thread(config.redis_pool_size, config.workers))?;

    let secret = config.jwt_secret.clone().unwrap_or_else(|| {
        tracing::warn!(
            "APP_JWT_SECRET is not set: using a random per-process secret; tokens die with \
             this process and other instances will not accept them"
        );
        JwtSecret::random()
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let users: Arc<dyn UserRepository> = Arc::new(PgUserRepository::new(pg.clone()));
    let hasher: Arc<dyn PasswordHasher> = Arc::new(Argon2Hasher::new(
        config.workers.max(2),
        config.dependency_timeout * 2,
    ));
    let tokens: Arc<dyn TokenService> = Arc::new(JwtTokenService::new(&secret, config.jwt_ttl));

    if let Some(admin) = &config.admin {
        BootstrapAdmin::new(Arc::clone(&users), Arc::clone(&hasher))
            .execute(&admin.login_id, &admin.password)
            .await
            .context("ensuring the admin account from APP_ADMIN_LOGIN_ID")?;
    }

    let points: Arc<dyn PointsStore> =
        Arc::new(PgPointsStore::new(pg.clone(), config.idempotency_retention));
    let idempotency = PgIdempotencyStore::new(pg.clone(), config.idempotency_retention);
    let keys = RedisKeys::new(config.redis_key_prefix.clone());
    // The reads docs/caching.md caches go through Redis, shared by every
    // instance, unless APP_READ_CACHE_BOUND=off.
    let product_count = read_cache(config, &pg, &redis_pool, &keys, "product_count");
    let campaign_counts = read_cache(config, &pg, &redis_pool, &keys, "campaign_counts");
    let mut catalog: Arc<dyn CatalogStore> = Arc::new(PgCatalogStore::new(pg.clone()));
    if let Some(cache) = &product_count {
        catalog = Arc::new(CachedCatalog::new(catalog, Arc::clone(cache)));
    }
    // Simultaneous reads of one product or page share a query (see infra::coalesce).
    let catalog: Arc<dyn CatalogStore> =
        Arc::new(infra::coalesce::CoalescedCatalog::new(catalog).within(pg.op_timeout()));
    // The order and investment batches run on connections of their own
    // (see PgOrderStore, PgInvestStore): a pool each, one connection a lane.
    let lanes_pool = || {
        postgres::connect_batch_pool(&PgPoolSettings {
            url: config.database_url.clone(),
            max_size: postgres::LANES,
            timeout: config.dependency_timeout,
            statement_timeout: config.statement_timeout,
        })
    };
    let order_lanes = lanes_pool()?;
    let invest_lanes = lanes_pool()?;
    let orders: Arc<dyn OrderStore> = Arc::new(PgOrderStore::new(
        pg.clone(),
        &order_lanes,
        config.idempotency_retention,
    ));

    // A gate's refusals: recorded in Redis, landed in Postgres in batches.
    let (refusals, refusal_writer) = redis::write_behind(
        redis_pool.clone(),
        keys.clone(),
        idempotency.clone(),
        config.idempotency_retention,
        redis::REFUSAL_QUEUE,
        config.dependency_timeout,
    );
    let fast_refusals: Arc<dyn FastRefusals> = Arc::new(refusals.clone());
    // Sign-ins count in Redis (one budget for all instances); attempts count
    // in process, off the hot path's network (docs/reliability.md).
    let throttle = Arc::new(
        Throttle::new(
            Arc::new(RedisRateLimiter::new(redis_pool.clone(), keys.clone())),
            config.limits,
        )
        .with_attempt_limiter(Arc::new(LocalRateLimiter::default())),
    );
    let expiry_store: Arc<dyn domain::coupon::ExpiryStore> =
        Arc::new(PgExpiryStore::new(pg.clone()));
    let send_notices = Arc::new(SendExpiryNotices::new(
        Arc::clone(&expiry_store),
        Arc::new(infra::notify::JsonLineNotifier::stdout()),
        Arc::clone(&clock),
        config.notice_claim_ttl,
    ));
    let issue_gate: Arc<dyn domain::coupon::IssueGate> = Arc::new(RedisIssueGate::new(
        redis_pool.clone(),
        keys.clone(),
        pg.clone(),
    ));
    let gate: Arc<dyn StockGate> = Arc::new(
        RedisStockGate::new(redis_pool.clone(), keys.clone(), pg.clone())
            .recording_on(refusals.clone()),
    );
    let invest_gate: Arc<dyn domain::invest::InvestGate> = Arc::new(RedisInvestGate::new(
        redis_pool.clone(),
        keys.clone(),
        pg.clone(),
    ));
    // One relay per sink, each with its own progress in the outbox: the
    // Redis stream always, Kafka when brokers are configured.
    let outbox: Arc<dyn domain::events::Outbox> = Arc::new(PgOutbox::new(pg.clone()));
    let mut relays = vec![Arc::new(RelayOutbox::new(
        Arc::clone(&outbox),
        Sink::Stream,
        Arc::new(RedisEventStream::new(
            redis_pool.clone(),
            &keys,
            config.events_max_len,
        )),
        500,
    ))];
    if let Some(kafka) = &config.kafka {
        relays.push(Arc::new(RelayOutbox::new(
            outbox,
            Sink::Kafka,
            Arc::new(infra::kafka::KafkaEventSink::new(kafka.clone())),
            500,
        )));
    }
    let ranking = RedisSalesRanking::new(redis_pool.clone(), keys.clone());
    let lock = RedisLock::new(redis_pool.clone(), keys.clone());

    let pg_status: PoolStatusFn = {
        let pg = pg.clone();
        Arc::new(move || pool_status(pg.status()))
    };
    let lanes_status: PoolStatusFn = Arc::new(move || pool_status(order_lanes.status()));
    let invest_lanes_status: PoolStatusFn = {
        let pool = invest_lanes.clone();
        Arc::new(move || pool_status(pool.status()))
    };
    let redis_status: PoolStatusFn = {
        let pool = redis_pool.clone();
        Arc::new(move || pool_status(pool.status()))
    };
    let metrics = MetricsApi {
        metrics: Metrics::new(),
        pools: vec![
            ("postgres", pg_status),
            ("postgres_order_lanes", lanes_status),
            ("postgres_invest_lanes", invest_lanes_status),
            ("redis", redis_status),
        ],
        relays: relays.clone(),
        refusals_queued: Arc::new(move || refusals.queued()),
        caches: product_count
            .iter()
            .chain(&campaign_counts)
            .map(|cache| {
                let name = cache.name();
                let cache = Arc::clone(cache);
                let counts: CacheCountsFn = Arc::new(move || cache.counts().named());
                (name, counts)
            })
            .collect(),
    };
    let coupons = coupon_store(&pg, campaign_counts);
    let probes: Vec<Arc<dyn HealthProbe>> = vec![
        Arc::new(PostgresProbe::new(pg.clone())),
        Arc::new(RedisProbe::new(redis_pool)),
    ];
    let invest_store: Arc<dyn domain::invest::InvestStore> = Arc::new(PgInvestStore::with_lanes(
        pg.clone(),
        &invest_lanes,
        config.idempotency_retention,
    ));
    let invest = InvestApi {
        create: Arc::new(CreateInvestProduct::new(Arc::clone(&invest_store))),
        queries: Arc::new(InvestQueries::new(
            Arc::clone(&invest_store),
            Arc::clone(&clock),
        )),
        invest: Arc::new(MakeInvestment::new(
            invest_store,
            Arc::new(idempotency.clone()),
            Arc::clone(&fast_refusals),
            invest_gate,
            Arc::clone(&clock),
        )),
    };
    let web = WebState {
        invest,
        metrics,
        coupon: CouponApi {
            create_campaign: Arc::new(CreateCampaign::new(Arc::clone(&coupons))),
            generate_codes: Arc::new(GenerateCodes::new(
                Arc::clone(&coupons),
                Arc::new(infra::codes::RandomCodes),
                Arc::clone(&issue_gate),
            )),
            import_codes: Arc::new(ImportCodes::new(
                Arc::clone(&coupons),
                Arc::clone(&issue_gate),
            )),
            campaign_queries: Arc::new(CampaignQueries::new(Arc::clone(&coupons))),
            issue: Arc::new(IssueCoupon::new(
                Arc::clone(&coupons),
                issue_gate,
                Arc::clone(&clock),
            )),
            use_coupon: Arc::new(UseCoupon::new(Arc::clone(&coupons))),
            cancel_use: Arc::new(CancelCouponUse::new(Arc::clone(&coupons))),
            coupon_queries: Arc::new(CouponQueries::new(coupons, Arc::clone(&clock))),
            expiring: Arc::new(ExpiringCoupons::new(expiry_store, Arc::clone(&clock))),
            send_notices: Arc::clone(&send_notices),
        },
        catalog: CatalogApi {
            create: Arc::new(CreateProduct::new(Arc::clone(&catalog))),
            update: Arc::new(UpdateProduct::new(Arc::clone(&catalog), Arc::clone(&gate))),
            queries: Arc::new(CatalogQueries::new(Arc::clone(&catalog))),
            popular: Arc::new(PopularProducts::new(
                Arc::new(ranking.clone()),
                Arc::new(PgSalesRanking::new(pg.clone())),
                Arc::clone(&catalog),
            )),
        },
        ordering: OrderingApi {
            place: Arc::new(PlaceOrder::new(
                catalog,
                Arc::new(PgCouponQuotes::new(pg.clone())),
                Arc::clone(&orders),
                Arc::new(idempotency.clone()),
                fast_refusals,
                gate,
            )),
            queries: Arc::new(OrderQueries::new(orders)),
        },
        points: PointsApi {
            charge: Arc::new(ChargePoints::new(
                Arc::clone(&points),
                Arc::new(idempotency.clone()),
            )),
            queries: Arc::new(PointsQueries::new(points)),
        },
        identity: IdentityApi {
            sign_up: Arc::new(SignUp::new(
                Arc::clone(&users),
                Arc::clone(&hasher),
                Arc::clone(&tokens),
                Arc::clone(&clock),
            )),
            sign_in: Arc::new(SignIn::new(
                Arc::clone(&users),
                Arc::clone(&hasher),
                Arc::clone(&tokens),
                Arc::clone(&clock),
                Arc::clone(&throttle),
            )),
            users: Arc::new(UserQueries::new(Arc::clone(&users))),
        },
        auth: AuthContext {
            authenticate: Arc::new(Authenticate::new(users, tokens, clock)),
            gateway: config.gateway.clone(),
        },
        readiness: Readiness {
            probes,
            timeout: config
                .dependency_timeout
                .min(std::time::Duration::from_secs(1)),
        },
        json_limit: JsonLimit(config.json_body_limit),
        proxy_hops: ProxyHops(config.proxy_hops),
        throttle,
        admission: web::Admission::new(config.admission),
        legacy_invest: config.legacy_invest.clone(),
    };
    if config.demo_data {
        crate::demo::seed(&crate::demo::Seeders {
            products: &web.catalog.queries,
            create_product: &web.catalog.create,
            create_campaign: &web.coupon.create_campaign,
            generate_codes: &web.coupon.generate_codes,
            create_invest_product: &web.invest.create,
            lock: &lock,
        })
        .await
        .context("seeding the demo data (APP_DEMO_DATA)")?;
    }
    Ok(Components {
        web,
        jobs: crate::jobs::JobDeps {
            idempotency,
            refusal_writer,
            relays,
            lock,
            ranking,
            send_notices,
            notice_time: config.notice_time,
        },
    })
}

/// The shared read cache named `name` (docs/caching.md), unless
/// `APP_READ_CACHE_BOUND=off`.
pub(crate) fn read_cache(
    config: &Config,
    pg: &postgres::Postgres,
    redis: &redis::RedisPool,
    keys: &RedisKeys,
    name: &'static str,
) -> Option<Arc<ReadCache>> {
    config.read_cache_bound.map(|bound| {
        Arc::new(
            ReadCache::new(redis.clone(), keys.clone(), name, bound, pg.op_timeout())
                // 250 ms at the default 2 s.
                .with_redis_wait(config.dependency_timeout / 8),
        )
    })
}

/// The coupon store of every process (the service and `coupons import`,
/// so that codes added by either invalidate the cached pool counts).
pub(crate) fn coupon_store(
    pg: &postgres::Postgres,
    campaign_counts: Option<Arc<ReadCache>>,
) -> Arc<dyn CouponStore> {
    let store: Arc<dyn CouponStore> = Arc::new(PgCouponStore::new(pg.clone()));
    match campaign_counts {
        Some(cache) => Arc::new(CachedCoupons::new(store, cache)),
        None => store,
    }
}

fn pool_status(s: infra::PoolState) -> PoolStatus {
    PoolStatus {
        max: s.max_size,
        open: s.size,
        idle: s.available,
        waiting: s.waiting,
    }
}
