//! State survives a restart of the process.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_session_survives_a_restart_on_the_same_store() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let app = app.restart();
    let r = app.refresh(&refresh_token(&pair)).await;
    let next = assert_token_pair(&r, "refresh after a restart");
    assert_eq!(jwt_claims(&access_token(&next))["sid"], jwt_claims(&access_token(&pair))["sid"]);
    app.login("alice", PASSWORD).await;
    let revoke = app.post_json_bearer("/api/revoke", &json!({"scope": "global"}), &access_token(&pair)).await;
    assert_eq!(revoke.status, 200, "an access token from before the restart is still valid: {}", revoke.text());
    assert_eq!(revoke.json(), json!({"revoked_sessions": 2}));
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    assert_eq!(app.revoke(&refresh_token(&pair)).await.status, 200);
    let app = app.restart();
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "revoked before the restart");
}
