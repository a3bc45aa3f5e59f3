//! `APP_DEMO_DATA=true`: a few products, a coupon campaign with codes and an
//! open investment product, seeded through the use cases into an empty
//! database, so a new user can try every endpoint at once.
//!
//! "Empty" means no product yet; instances starting together seed once (a
//! Redis lock), and a restart never seeds twice.

use std::time::Duration;

use application::catalog::{CatalogQueries, CreateProduct};
use application::coupon::{CreateCampaign, GenerateCodes};
use application::invest::CreateInvestProduct;
use chrono::Utc;
use domain::catalog::{NewProduct, ProductName, Stock};
use domain::coupon::{
    CampaignName, CodeCount, DiscountKind, DiscountRule, IssueWindow, NewCampaign, ValidDays,
};
use domain::invest::{InvestAmount, InvestTitle, NewInvestProduct, RecruitingWindow};
use domain::money::Points;
use domain::paging::PageRequest;
use infra::redis::RedisLock;

/// The use cases the seed goes through.
pub(crate) struct Seeders<'a> {
    pub products: &'a CatalogQueries,
    pub create_product: &'a CreateProduct,
    pub create_campaign: &'a CreateCampaign,
    pub generate_codes: &'a GenerateCodes,
    pub create_invest_product: &'a CreateInvestProduct,
    pub lock: &'a RedisLock,
}

/// Seeds the demo data unless the database holds products already.
/// Returns whether it seeded.
///
/// # Errors
/// When a store fails or the data is invalid (a bug).
pub(crate) async fn seed(s: &Seeders<'_>) -> anyhow::Result<bool> {
    let Some(lease) = s
        .lock
        .try_acquire("demo-seed", Duration::from_secs(60))
        .await?
    else {
        tracing::info!("another instance is seeding the demo data");
        return Ok(false);
    };
    let seeded = seed_locked(s).await;
    let _ = lease.release().await;
    seeded
}

async fn seed_locked(s: &Seeders<'_>) -> anyhow::Result<bool> {
    let first = PageRequest::new(Some(0), Some(1))?;
    if !s.products.list(first).await?.items.is_empty() {
        tracing::info!("APP_DEMO_DATA: the database has products already; not seeding");
        return Ok(false);
    }
    for (name, price, stock) in [
        ("Americano", 4_500, 100),
        ("Butter croissant", 3_800, 50),
        ("Limited edition mug", 25_000, 10),
    ] {
        s.create_product
            .execute(NewProduct {
                name: ProductName::parse(name)?,
                price: Points::new(price).ok_or_else(|| anyhow::anyhow!("negative price"))?,
                stock: Stock::new(stock)?,
            })
            .await?;
    }
    let campaign = s
        .create_campaign
        .execute(NewCampaign {
            name: CampaignName::parse("Welcome 10% off")?,
            rule: DiscountRule::new(DiscountKind::Percent, 10, Some(5_000), 10_000)?,
            valid_days: ValidDays::new(30)?,
            window: IssueWindow::default(),
        })
        .await?;
    s.generate_codes
        .execute(campaign.id, CodeCount::new(100)?)
        .await?;
    let now = Utc::now();
    let fund = s
        .create_invest_product
        .execute(NewInvestProduct {
            title: InvestTitle::parse("Solar rooftop fund")?,
            total: InvestAmount::new(10_000_000)?,
            window: RecruitingWindow::new(
                now - chrono::Duration::hours(1),
                now + chrono::Duration::days(30),
            )?,
        })
        .await?;
    tracing::info!(
        campaign_id = campaign.id.get(),
        invest_product_id = fund.id.get(),
        "APP_DEMO_DATA: seeded 3 products, a campaign with 100 codes and an investment product"
    );
    Ok(true)
}
