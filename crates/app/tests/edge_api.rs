//! What every request gets regardless of route: problems for unknown routes
//! and methods, and a request id.

mod support;

use support::TestApp;

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::spawn().await;
    let reply = app.get("/api/v1/no-such-thing", None).await;
    reply.assert_problem(404, "NOT_FOUND");
    let reply = app.get("/", None).await;
    reply.assert_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_with_allow() {
    let app = TestApp::spawn().await;
    let reply = app.get("/api/v1/auth/signup", None).await;
    reply.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_echoed_when_given() {
    let app = TestApp::spawn().await;

    let generated = app.get("/health/live", None).await;
    let id = generated.header("x-request-id").expect("generated id");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let echoed = app
        .send(
            reqwest::Method::GET,
            "/api/v1/nowhere",
            &[("x-request-id", "client-chosen-42")],
            None,
        )
        .await;
    assert_eq!(echoed.status, 404);
    assert_eq!(echoed.header("x-request-id"), Some("client-chosen-42"));

    // An id that is not sane text is replaced, not echoed.
    let replaced = app
        .send(
            reqwest::Method::GET,
            "/health/live",
            &[("x-request-id", &"x".repeat(200))],
            None,
        )
        .await;
    assert_eq!(replaced.header("x-request-id").map(str::len), Some(36));
}
