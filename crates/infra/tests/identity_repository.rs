//! The Postgres user repository against a real, freshly migrated database.

use std::time::{Duration, Instant};

use domain::identity::{
    CreateUserError, LoginId, NewUser, PasswordHash, Role, UserName, UserRepository,
};
use domain::paging::PageRequest;
use infra::postgres::{PgPoolSettings, PgUserRepository, connect_pool};
use testkit::TestDb;

fn repo(db: &TestDb) -> PgUserRepository {
    let pool = connect_pool(&PgPoolSettings {
        url: db.url.clone(),
        max_size: 8,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("pool");
    PgUserRepository::new(pool)
}

fn login(s: &str) -> LoginId {
    LoginId::parse(s).expect("valid login id")
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        login_id: login(name),
        name: UserName::parse(&format!("{name} name")).expect("valid"),
        password_hash: Some(PasswordHash::from_phc(format!("$argon2id${name}"))),
        role: Role::User,
    }
}

#[tokio::test]
async fn a_created_user_is_found_by_login_and_by_id_with_its_hash() {
    let db = TestDb::create().await;
    let users = repo(&db);

    let created = users.create(new_user("alice")).await.expect("created");
    let by_login = users
        .find_credentials(&login("alice"))
        .await
        .expect("query")
        .expect("found");
    let by_id = users
        .find_by_id(created.id)
        .await
        .expect("query")
        .expect("found");

    assert_eq!(by_login.user, created);
    assert_eq!(by_id, created);
    assert_eq!(
        by_login.password_hash.map(|h| h.as_str().to_owned()),
        Some("$argon2id$alice".into())
    );
    assert_eq!(created.name.as_str(), "alice name");
    assert!(
        users
            .find_credentials(&login("nobody"))
            .await
            .expect("query")
            .is_none()
    );
}

#[tokio::test]
async fn concurrent_sign_ups_for_one_login_id_create_exactly_one_user() {
    let db = TestDb::create().await;
    let users = repo(&db);

    let attempts = (0..20).map(|_| {
        let users = users.clone();
        tokio::spawn(async move { users.create(new_user("contested")).await })
    });
    let results: Vec<_> = futures_util::future::join_all(attempts).await;

    let won = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(CreateUserError::LoginIdTaken))))
        .count();
    assert_eq!((won, taken), (1, 19));
    let page = users
        .list(PageRequest::new(None, None).expect("valid"))
        .await
        .expect("list");
    assert_eq!(page.total_count, 1);
}

#[tokio::test]
async fn gateway_provisioning_is_idempotent_under_concurrency() {
    let db = TestDb::create().await;
    let users = repo(&db);

    let attempts = (0..20).map(|_| {
        let users = users.clone();
        tokio::spawn(async move { users.find_or_provision(&login("gw-user")).await })
    });
    let ids: Vec<i64> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| {
            r.expect("joined")
                .expect("provisioned")
                .expect("a gateway account")
                .id
                .get()
        })
        .collect();

    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let creds = users
        .find_credentials(&login("gw-user"))
        .await
        .expect("query")
        .expect("found");
    assert_eq!(creds.user.role, Role::User);
    assert!(
        creds.password_hash.is_none(),
        "provisioned users have no password"
    );
}

#[tokio::test]
async fn the_gateway_never_gets_an_account_that_has_a_password() {
    let db = TestDb::create().await;
    let users = repo(&db);
    users.create(new_user("signed-up")).await.expect("created");

    let found = users
        .find_or_provision(&login("signed-up"))
        .await
        .expect("query");

    assert!(
        found.is_none(),
        "a password account is not a gateway account"
    );
    let page = users
        .list(PageRequest::new(None, None).expect("valid"))
        .await
        .expect("list");
    assert_eq!(page.total_count, 1, "nothing provisioned");
}

#[tokio::test]
async fn upsert_admin_promotes_an_existing_user_and_replaces_the_hash() {
    let db = TestDb::create().await;
    let users = repo(&db);
    let plain = users.create(new_user("boss")).await.expect("created");

    let admin = users
        .upsert_admin(
            &login("boss"),
            &PasswordHash::from_phc("$argon2id$new".into()),
        )
        .await
        .expect("upserted");

    assert_eq!((admin.id, admin.role), (plain.id, Role::Admin));
    let creds = users
        .find_credentials(&login("boss"))
        .await
        .expect("query")
        .expect("found");
    assert_eq!(
        creds.password_hash.map(|h| h.as_str().to_owned()),
        Some("$argon2id$new".into())
    );
}

#[tokio::test]
async fn list_pages_by_id_with_the_total() {
    let db = TestDb::create().await;
    let users = repo(&db);
    for name in ["u-a", "u-b", "u-c", "u-d", "u-e"] {
        users.create(new_user(name)).await.expect("created");
    }

    let page = users
        .list(PageRequest::new(Some(1), Some(2)).expect("valid"))
        .await
        .expect("list");

    let logins: Vec<&str> = page.items.iter().map(|u| u.login_id.as_str()).collect();
    assert_eq!(logins, ["u-c", "u-d"]);
    assert_eq!(page.total_count, 5);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_within_the_timeout() {
    // Nothing listens on port 1.
    let pool = connect_pool(&PgPoolSettings {
        url: "postgres://postgres@127.0.0.1:1/none".into(),
        max_size: 2,
        timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(1),
    })
    .expect("pool builds lazily");
    let users = PgUserRepository::new(pool);

    let started = Instant::now();
    let result = users.find_by_id(domain::identity::UserId::new(1)).await;

    let err = result.expect_err("must fail");
    assert_eq!(err.service(), "postgres");
    // Refused, not hung (generous: a busy machine is slow, never stuck).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
