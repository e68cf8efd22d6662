//! Concurrent refreshes of one token, and refreshes racing revocations.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

async fn post(client: reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_parallel_refreshes_of_one_token_all_get_the_same_successor() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let token = refresh_token(&pair);
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        tasks.spawn(post(app.client.clone(), app.url("/api/refresh"), json!({"refresh_token": token})));
    }
    let mut successors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.expect("task");
        assert_eq!(status, 200, "every concurrent refresh within the grace succeeds: {body}");
        successors.push(refresh_token(&body));
    }
    assert_eq!(successors.len(), 16);
    assert!(successors.iter().all(|s| *s == successors[0]), "all got the same successor: {successors:?}");
    assert_ne!(successors[0], token);
    let next = app.refresh_ok(&successors[0]).await;
    assert_ne!(refresh_token(&next), successors[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_racing_a_revoke_always_leaves_the_session_ended() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    for round in 0..10 {
        let pair = app.login("alice", PASSWORD).await;
        let token = refresh_token(&pair);
        let refresh = tokio::spawn(post(app.client.clone(), app.url("/api/refresh"), json!({"refresh_token": token})));
        let revoke = tokio::spawn(post(app.client.clone(), app.url("/api/revoke"), json!({"refresh_token": token})));
        let (refresh_status, refreshed) = refresh.await.expect("refresh task");
        let (revoke_status, revoked) = revoke.await.expect("revoke task");
        assert_eq!(revoke_status, 200, "round {round}: revoke always succeeds: {revoked}");
        assert!(
            refresh_status == 200 || refresh_status == 400,
            "round {round}: refresh answered {refresh_status} {refreshed}"
        );
        if refresh_status == 200 {
            let successor = refresh_token(&refreshed);
            assert_invalid_grant(
                &app.refresh(&successor).await,
                &format!("round {round}: the successor after the revoke"),
            );
        } else {
            assert_eq!(refreshed["error"], "invalid_grant", "round {round}: {refreshed}");
        }
        assert_invalid_grant(&app.refresh(&token).await, &format!("round {round}: the original token"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handlers_on_one_store_behave_as_one() {
    let first = TestApp::spawn(&[]);
    let second = first.second_instance();
    first.add_user("alice", PASSWORD, &[]);
    // Logged in on one instance, refreshed on both at once: one successor, no fork.
    let pair = second.login("alice", PASSWORD).await;
    let token = refresh_token(&pair);
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let app = if i % 2 == 0 { &first } else { &second };
        tasks.spawn(post(app.client.clone(), app.url("/api/refresh"), json!({"refresh_token": token})));
    }
    let mut successors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.expect("task");
        assert_eq!(status, 200, "{body}");
        successors.push(refresh_token(&body));
    }
    assert!(successors.iter().all(|s| *s == successors[0]), "the session forked across instances: {successors:?}");
    // A refresh on one instance racing a revoke on the other always ends the session.
    let current = successors[0].clone();
    let (refreshed, revoked) = tokio::join!(
        post(first.client.clone(), first.url("/api/refresh"), json!({"refresh_token": current})),
        post(second.client.clone(), second.url("/api/revoke"), json!({"refresh_token": current})),
    );
    assert_eq!(revoked.0, 200, "{:?}", revoked.1);
    let successor = refreshed.1["refresh_token"].as_str().map(str::to_string);
    for token in std::iter::once(current).chain(successor) {
        let r = second.refresh(&token).await;
        assert_invalid_grant(&r, "after the race the session is ended on every instance");
    }
    // Replay detected on one instance ends the session for the other as well.
    let pair = first.login("alice", PASSWORD).await;
    let old = refresh_token(&pair);
    let newer = second.refresh_ok(&old).await;
    let newest = first.refresh_ok(&refresh_token(&newer)).await;
    assert_invalid_grant(&second.refresh(&old).await, "a token two generations old is a replay");
    assert_invalid_grant(&first.refresh(&refresh_token(&newest)).await, "the replay ended the session");
}
