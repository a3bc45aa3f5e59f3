//! Accounts and authentication over HTTP, as a client sees them.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use support::{JWT_SECRET, Options, TestApp};

#[tokio::test]
async fn sign_up_then_sign_in_then_me() {
    let app = TestApp::spawn().await;

    let signed_up = app
        .post(
            "/api/v1/auth/signup",
            &json!({"loginId": "alice", "password": "correct-horse", "name": "Alice Kim"}),
            None,
        )
        .await;
    assert_eq!(signed_up.status, 201, "{}", signed_up.text);
    assert_eq!(signed_up.body["loginId"], "alice");
    assert!(signed_up.body["userId"].is_i64());
    let expires_at = signed_up.body["expiresAt"].as_str().expect("expiresAt");
    assert!(chrono::DateTime::parse_from_rfc3339(expires_at).is_ok() && expires_at.ends_with('Z'));

    let signed_in = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "alice", "password": "correct-horse"}),
            None,
        )
        .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    assert_eq!(signed_in.body["userId"], signed_up.body["userId"]);
    let token = signed_in.body["token"].as_str().expect("token");

    let me = app.get("/api/v1/me", Some(token)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["userId"], signed_up.body["userId"]);
    assert_eq!(me.body["loginId"], "alice");
    assert_eq!(me.body["name"], "Alice Kim");
    assert_eq!(me.body["role"], "USER");
}

#[tokio::test]
async fn the_password_is_stored_as_an_argon2id_hash() {
    use diesel::QueryableByName;
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        password_hash: String,
    }
    let app = TestApp::spawn().await;
    app.sign_up("hashme").await;

    let mut conn = app.db.connect().await;
    let row: Row = diesel::sql_query("SELECT password_hash FROM users WHERE login_id = 'hashme'")
        .get_result(&mut conn)
        .await
        .expect("row");

    assert!(row.password_hash.starts_with("$argon2id$"));
    assert!(!row.password_hash.contains("password-123"));
}

#[tokio::test]
async fn a_taken_login_id_is_409() {
    let app = TestApp::spawn().await;
    app.sign_up("bob").await;

    let again = app
        .post(
            "/api/v1/auth/signup",
            &json!({"loginId": "bob", "password": "another-pass"}),
            None,
        )
        .await;

    again.assert_problem(409, "LOGIN_ID_TAKEN");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_login_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.sign_up("carol").await;

    let wrong = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "carol", "password": "wrong-password"}),
            None,
        )
        .await;
    let unknown = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "nobody", "password": "wrong-password"}),
            None,
        )
        .await;

    wrong.assert_problem(401, "INVALID_CREDENTIALS");
    unknown.assert_problem(401, "INVALID_CREDENTIALS");
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn sign_up_validates_each_field_and_names_it() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"loginId": "ab", "password": "long-enough"}),
            "loginId",
        ),
        (
            json!({"loginId": "has space", "password": "long-enough"}),
            "loginId",
        ),
        (
            json!({"loginId": "x".repeat(65), "password": "long-enough"}),
            "loginId",
        ),
        (json!({"loginId": "dave", "password": "short"}), "password"),
        (
            json!({"loginId": "dave", "password": "p".repeat(129)}),
            "password",
        ),
        (
            json!({"loginId": "dave", "password": "long-enough", "name": ""}),
            "name",
        ),
        (json!({"loginId": 42, "password": "long-enough"}), "loginId"),
    ];
    for (body, field) in cases {
        let reply = app.post("/api/v1/auth/signup", &body, None).await;
        reply.assert_invalid_field(field);
    }
    let missing = app
        .post("/api/v1/auth/signup", &json!({"loginId": "dave"}), None)
        .await;
    missing.assert_problem(400, "VALIDATION_FAILED");
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("password")
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;

    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/signup",
            &[("content-type", "application/json")],
            Some(r#"{"loginId": "eve", "password": "#),
        )
        .await;

    reply.assert_problem(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_400_without_internal_names() {
    let app = TestApp::spawn().await;
    let reply = app
        .post("/api/v1/auth/signup", &json!(["loginId", "password"]), None)
        .await;
    reply.assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(reply.body["detail"], "the body must be a JSON object");
}

#[tokio::test]
async fn an_oversize_body_is_refused() {
    let app = TestApp::spawn().await;
    let huge = format!(
        r#"{{"loginId":"eve","password":"long-enough","name":"{}"}}"#,
        "n".repeat(200_000)
    );

    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/signup",
            &[("content-type", "application/json")],
            Some(&huge),
        )
        .await;

    reply.assert_problem(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn a_non_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/signup",
            &[("content-type", "text/plain")],
            Some("loginId=eve"),
        )
        .await;
    reply.assert_problem(415, "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn me_without_a_token_is_401() {
    let app = TestApp::spawn().await;
    let reply = app.get("/api/v1/me", None).await;
    reply.assert_problem(401, "UNAUTHENTICATED");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn a_malformed_authorization_header_is_401() {
    let app = TestApp::spawn().await;
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", "token"] {
        let reply = app
            .send(
                reqwest::Method::GET,
                "/api/v1/me",
                &[("authorization", value)],
                None,
            )
            .await;
        reply.assert_problem(401, "UNAUTHENTICATED");
    }
}

fn sign(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("signed")
}

fn claims(user_id: i64, role: &str, exp: i64) -> serde_json::Value {
    json!({
        "sub": user_id.to_string(), "lid": "frank", "role": role,
        "iat": exp - 3600, "exp": exp,
        "iss": "points-commerce", "aud": "points-commerce-api",
    })
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = TestApp::spawn().await;
    app.sign_up("frank").await;
    let me = app
        .get("/api/v1/me", Some(&app.sign_up("frank2").await))
        .await;
    let id = me.body["userId"].as_i64().expect("id");

    let past = chrono::Utc::now().timestamp() - 10;
    let reply = app
        .get("/api/v1/me", Some(&sign(&claims(id, "USER", past))))
        .await;
    reply.assert_problem(401, "UNAUTHENTICATED");

    // The same claims, still valid, are accepted: the refusal was about expiry.
    let future = chrono::Utc::now().timestamp() + 600;
    assert_eq!(
        app.get("/api/v1/me", Some(&sign(&claims(id, "USER", future))))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_tampered_token_is_401() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("grace").await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    payload["role"] = json!("ADMIN");
    let forged_payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);

    app.get("/api/v1/me", Some(&tampered))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    app.get("/api/v1/admin/users", Some(&tampered))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_alg_none_token_is_401() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("heidi").await;
    let payload = token.split('.').nth(1).expect("payload").to_owned();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);

    for unsigned in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        app.get("/api/v1/me", Some(&unsigned))
            .await
            .assert_problem(401, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let app = TestApp::spawn().await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(1, "ADMIN", chrono::Utc::now().timestamp() + 600),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-some-other-secret!!"),
    )
    .expect("signed");
    app.get("/api/v1/admin/users", Some(&forged))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_user_on_an_admin_route_is_403_and_the_admin_gets_through() {
    let app = TestApp::spawn().await;
    let user = app.sign_up("ivan").await;

    app.get("/api/v1/admin/users", Some(&user))
        .await
        .assert_problem(403, "FORBIDDEN");
    app.get("/api/v1/admin/users", None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");

    let admin = app.admin_token().await;
    let listed = app
        .get("/api/v1/admin/users?page=0&size=10", Some(&admin))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["totalCount"], 2);
    assert_eq!(listed.body["page"], 0);
    assert_eq!(listed.body["size"], 10);
    let logins: Vec<&str> = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["loginId"].as_str())
        .collect();
    assert_eq!(logins, ["admin", "ivan"]);
    let me = app.get("/api/v1/me", Some(&admin)).await;
    assert_eq!(me.body["role"], "ADMIN");

    let bad_page = app.get("/api/v1/admin/users?size=101", Some(&admin)).await;
    bad_page.assert_problem(400, "VALIDATION_FAILED");
}

/// A request as the trusted gateway sends it: the user's login id and the
/// shared secret.
fn via_gateway(login: &str) -> [(&str, &str); 2] {
    [
        ("X-USER-ID", login),
        ("X-Gateway-Secret", support::GATEWAY_SECRET),
    ]
}

#[tokio::test]
async fn the_gateway_header_provisions_a_user_when_the_mode_is_on() {
    let app = TestApp::spawn_with(Options {
        trusted_user_header: Some("X-USER-ID".into()),
        ..Options::default()
    })
    .await;

    let first = app
        .send(
            reqwest::Method::GET,
            "/api/v1/me",
            &via_gateway("gateway-user"),
            None,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["loginId"], "gateway-user");
    assert_eq!(first.body["role"], "USER");

    let again = app
        .send(
            reqwest::Method::GET,
            "/api/v1/me",
            &[
                ("x-user-id", "gateway-user"),
                ("x-gateway-secret", support::GATEWAY_SECRET),
            ],
            None,
        )
        .await;
    assert_eq!(
        again.body["userId"], first.body["userId"],
        "same user on second sight"
    );

    // A provisioned user has no password: sign-in is refused.
    let sign_in = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "gateway-user", "password": "any-password"}),
            None,
        )
        .await;
    sign_in.assert_problem(401, "INVALID_CREDENTIALS");

    // The gateway grants no admin rights.
    let admin_route = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/users",
            &via_gateway("gateway-user"),
            None,
        )
        .await;
    admin_route.assert_problem(403, "FORBIDDEN");

    let invalid = app
        .send(
            reqwest::Method::GET,
            "/api/v1/me",
            &via_gateway("not a login id"),
            None,
        )
        .await;
    invalid.assert_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn the_gateway_header_counts_only_with_the_secret_and_never_for_a_password_account() {
    let app = TestApp::spawn_with(Options {
        trusted_user_header: Some("X-USER-ID".into()),
        ..Options::default()
    })
    .await;
    let alice = app.sign_up("alice").await;
    let me = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.send(reqwest::Method::GET, "/api/v1/me", &headers, None)
                .await
        }
    };

    // No secret, a wrong one, one a byte short, the right one with a suffix.
    let wrong = [
        vec![("X-USER-ID", "mallory".to_owned())],
        vec![
            ("X-USER-ID", "mallory".to_owned()),
            ("X-Gateway-Secret", "not-the-secret".to_owned()),
        ],
        vec![
            ("X-USER-ID", "mallory".to_owned()),
            (
                "X-Gateway-Secret",
                support::GATEWAY_SECRET[..support::GATEWAY_SECRET.len() - 1].to_owned(),
            ),
        ],
        vec![
            ("X-USER-ID", "mallory".to_owned()),
            ("X-Gateway-Secret", format!("{}x", support::GATEWAY_SECRET)),
        ],
    ];
    for headers in wrong {
        me(headers.clone())
            .await
            .assert_problem(401, "UNAUTHENTICATED");
    }
    // Accounts with a password are never named by a header, secret or not:
    // a signed-up user, the admin.
    for login in ["alice", support::ADMIN_LOGIN] {
        me(via_gateway(login)
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect())
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    }
    let admin = app.admin_token().await;
    let users = app.get("/api/v1/admin/users", Some(&admin)).await;
    assert_eq!(
        users.body["totalCount"], 2,
        "nobody was provisioned by a refused header: {}",
        users.text
    );

    // A valid Bearer token wins: the header is ignored, even with the secret.
    let bearer = format!("Bearer {alice}");
    let reply = me(vec![
        ("Authorization", bearer),
        ("X-USER-ID", "mallory".to_owned()),
        ("X-Gateway-Secret", support::GATEWAY_SECRET.to_owned()),
    ])
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["loginId"], "alice");
}

#[test]
fn the_service_refuses_to_start_gateway_mode_without_a_long_enough_secret() {
    for secret in [None, Some("too-short")] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_app"));
        command
            .arg("serve")
            .env("APP_TRUSTED_USER_HEADER", "X-USER-ID")
            .env("APP_HTTP_ADDR", "127.0.0.1:0")
            .env_remove("APP_TRUSTED_GATEWAY_SECRET");
        if let Some(secret) = secret {
            command.env("APP_TRUSTED_GATEWAY_SECRET", secret);
        }
        let out = command.output().expect("the binary runs");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("APP_TRUSTED_GATEWAY_SECRET"), "{stderr}");
    }
}

#[tokio::test]
async fn the_gateway_header_is_ignored_when_the_mode_is_off() {
    let app = TestApp::spawn().await;

    let reply = app
        .send(
            reqwest::Method::GET,
            "/api/v1/me",
            &[("X-USER-ID", "gateway-user")],
            None,
        )
        .await;

    reply.assert_problem(401, "UNAUTHENTICATED");
    let admin = app.admin_token().await;
    let users = app.get("/api/v1/admin/users", Some(&admin)).await;
    assert_eq!(users.body["totalCount"], 1, "nobody was provisioned");
}
