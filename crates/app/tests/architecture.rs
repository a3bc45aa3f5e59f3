//! The dependency rule of the hexagon, checked on every test run: `domain`
//! depends on no I/O crate and `application` on no adapter, so a shortcut
//! across layers fails CI instead of slipping into review.

use std::collections::BTreeSet;
use std::path::Path;

fn dependencies(krate: &str) -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest readable");
    let parsed: toml::Table = text.parse().expect("manifest is TOML");
    parsed
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|deps| deps.keys().cloned().collect())
        .unwrap_or_default()
}

const IO_CRATES: &[&str] = &[
    "tokio",
    "diesel",
    "diesel-async",
    "diesel_migrations",
    "deadpool",
    "deadpool-redis",
    "redis",
    "actix-web",
    "reqwest",
    "jsonwebtoken",
    "argon2",
];

#[test]
fn domain_depends_on_no_io_crate() {
    let deps = dependencies("domain");
    let forbidden: Vec<_> = deps
        .iter()
        .filter(|d| IO_CRATES.contains(&d.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "domain must stay pure, but depends on {forbidden:?}"
    );
    assert!(!deps.contains("application") && !deps.contains("infra") && !deps.contains("web"));
}

#[test]
fn application_depends_on_the_domain_and_no_adapter() {
    let deps = dependencies("application");
    assert!(deps.contains("domain"));
    let forbidden: Vec<_> = deps
        .iter()
        .filter(|d| {
            IO_CRATES.contains(&d.as_str()) || ["infra", "web", "app"].contains(&d.as_str())
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "application must only see ports, but depends on {forbidden:?}"
    );
}

#[test]
fn adapters_point_inwards_only() {
    let infra = dependencies("infra");
    let web = dependencies("web");
    assert!(!infra.contains("web") && !infra.contains("application") && !infra.contains("app"));
    assert!(
        !web.contains("infra") && !web.contains("app"),
        "web sees use cases, not adapters"
    );
}
