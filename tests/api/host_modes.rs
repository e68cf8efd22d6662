//! The two ways the Functions host calls the handler: the readiness probe and invocation payloads
//! (`POST /<function>`), besides forwarded requests.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn readiness_probe_get_root_is_200() {
    let app = TestApp::spawn(&[]);
    let r = app.raw("GET", "/", None, Vec::new(), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn login_body(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

#[tokio::test]
async fn invocation_login_answers_outer_200_with_tokens_in_the_inner_body() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("alice", PASSWORD, &[]);
    let (status, outer) = app.invoke("token", "POST", json_headers(), &login_body("alice", PASSWORD)).await;
    assert_eq!(status, 200, "{outer}");
    assert_eq!(outer["Logs"], json!([]), "{outer}");
    assert_eq!(outer["ReturnValue"], Value::Null, "{outer}");
    let (inner_status, headers, body) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_eq!(headers["Cache-Control"], "no-store", "{outer}");
    assert!(headers["Content-Type"].as_str().unwrap_or_default().starts_with("application/json"), "{outer}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(jwt_claims(body["access_token"].as_str().unwrap())["sub"], id.as_str());
    // The refresh token from an invocation works in forwarded mode and vice versa.
    let forwarded = app.refresh_ok(&refresh_token(&body)).await;
    let (_, outer) = app
        .invoke("refresh", "POST", json_headers(), &json!({"refresh_token": refresh_token(&forwarded)}).to_string())
        .await;
    let (inner_status, _, refreshed) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_ne!(refresh_token(&refreshed), refresh_token(&forwarded));
}

#[tokio::test]
async fn invocation_with_bad_credentials_answers_outer_200_with_inner_400() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let (status, outer) = app.invoke("token", "POST", json_headers(), &login_body("alice", "wrong-password")).await;
    assert_eq!(status, 200, "{outer}");
    let (inner_status, _, body) = inner(&outer);
    assert_eq!(inner_status, 400, "{outer}");
    assert_eq!(body["error"], "invalid_grant", "{outer}");
}

#[tokio::test]
async fn invocation_with_a_disallowed_method_answers_inner_405_with_allow() {
    let app = TestApp::spawn(&[]);
    let rows = [
        ("token", "GET", "POST, PATCH"),
        ("refresh", "PATCH", "POST"),
        ("jwks", "POST", "GET, HEAD"),
        ("revoke", "DELETE", "POST, PATCH"),
    ];
    for (function, method, allow) in rows {
        let (status, outer) = app.invoke(function, method, json_headers(), "{}").await;
        assert_eq!(status, 200, "{function} {method}: {outer}");
        let (inner_status, headers, body) = inner(&outer);
        assert_eq!(inner_status, 405, "{function} {method}: {outer}");
        assert_eq!(headers["Allow"], allow, "{function} {method}: {outer}");
        assert_eq!(body["error"], "method_not_allowed", "{outer}");
    }
}

#[tokio::test]
async fn invocation_accepts_header_values_as_plain_strings_and_lower_case_methods() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let headers = json!({"Content-Type": "application/json", "Accept": "application/json"});
    let (status, outer) = app.invoke("token", "post", headers, &login_body("alice", PASSWORD)).await;
    assert_eq!(status, 200, "{outer}");
    let (inner_status, _, body) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test]
async fn invocation_revoke_with_a_bearer_header_and_jwks_with_get_work() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let headers = json!({
        "Content-Type": ["application/json"],
        "Authorization": [format!("Bearer {}", access_token(&pair))],
    });
    let (_, outer) = app.invoke("revoke", "POST", headers, &json!({"scope": "global"}).to_string()).await;
    let (inner_status, _, body) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_eq!(body, json!({"revoked_sessions": 1}));
    let (_, outer) = app.invoke("revoke", "POST", json_headers(), &json!({"scope": "global"}).to_string()).await;
    let (inner_status, headers, _) = inner(&outer);
    assert_eq!(inner_status, 401, "{outer}");
    assert_eq!(headers["WWW-Authenticate"], "Bearer", "{outer}");
    let (_, outer) = app.invoke("jwks", "GET", json!({}), "").await;
    let (inner_status, _, body) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_eq!(body, json!({"keys": []}));
}

#[tokio::test]
async fn a_malformed_invocation_payload_answers_outer_200_with_inner_400() {
    let app = TestApp::spawn(&[]);
    let rows: [(&str, &str); 8] = [
        ("not JSON", "nope"),
        ("a JSON array", "[]"),
        ("an empty object", "{}"),
        ("Data without req", r#"{"Data":{}}"#),
        ("req without Method", r#"{"Data":{"req":{"Headers":{},"Body":"{}"}}}"#),
        ("Method not a string", r#"{"Data":{"req":{"Method":5,"Body":"{}"}}}"#),
        (
            "a header value that is a number",
            r#"{"Data":{"req":{"Method":"POST","Headers":{"Content-Type":1},"Body":"{}"}}}"#,
        ),
        (
            "an inner body that is not JSON",
            r#"{"Data":{"req":{"Method":"POST","Headers":{"Content-Type":["application/json"]},"Body":"{nope"}}}"#,
        ),
    ];
    for (why, payload) in rows {
        let r = app.raw("POST", "/token", Some("application/json"), payload, None).await;
        assert_eq!(r.status, 200, "{why}: {}", r.text());
        let outer = r.json();
        let (inner_status, _, body) = inner(&outer);
        assert_eq!(inner_status, 400, "{why}: {outer}");
        assert_eq!(body["error"], "invalid_request", "{why}: {outer}");
    }
}

#[tokio::test]
async fn an_oversized_inner_body_answers_inner_413() {
    let app = TestApp::spawn(&[]);
    let big = json!({"username": "alice", "password": "x".repeat(17_000)}).to_string();
    let (status, outer) = app.invoke("token", "POST", json_headers(), &big).await;
    assert_eq!(status, 200, "{outer}");
    let (inner_status, _, _) = inner(&outer);
    assert_eq!(inner_status, 413, "{outer}");
}

#[tokio::test]
async fn the_account_routes_take_their_route_parameter_and_query_from_the_invocation_payload() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("bob", PASSWORD, &[]);
    let root = access_token(&app.login("root", PASSWORD).await);
    let bob = app.login("bob", PASSWORD).await;
    let auth = json!({"Content-Type": ["application/json"], "Authorization": [format!("Bearer {root}")]});
    let (_, outer) = app.invoke_with("users", "GET", auth.clone(), "", json!({}), json!({"limit": "1"})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!(status, 200, "{outer}");
    assert_eq!(body["users"].as_array().unwrap().len(), 1, "the query's limit applies: {body}");
    assert!(body["next_cursor"].is_string());
    let change = json!({"disabled": true}).to_string();
    let (_, outer) =
        app.invoke_with("users", "PATCH", auth.clone(), &change, json!({"username": "bob"}), json!({})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!(status, 200, "{outer}");
    assert_eq!(body["disabled"], true);
    assert_invalid_grant(&app.refresh(&refresh_token(&bob)).await, "bob's session ended");
    let (_, outer) = app.invoke_with("sessions", "DELETE", auth, "", json!({"id": "not-mine"}), json!({})).await;
    assert_eq!(inner(&outer).0, 404, "{outer}");
}

#[tokio::test]
async fn an_invocation_body_handed_over_as_a_json_object_is_as_strict_as_a_string_body() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    // Written by hand: a JSON object as `Body`, repeating "username" (a Value would keep the last).
    let payload = format!(
        r#"{{"Data":{{"req":{{"Url":"https://h/api/token","Method":"POST","Headers":{{"Content-Type":["application/json"]}},
            "Body":{{"username":"mallory","password":"{PASSWORD}","username":"alice"}}}}}},"Metadata":{{}}}}"#
    );
    let r = app.raw("POST", "/token", Some("application/json"), payload.into_bytes(), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, _, body) = inner(&r.json());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    // The same body without the repeat logs in: the object form itself is accepted.
    let payload = format!(
        r#"{{"Data":{{"req":{{"Url":"https://h/api/token","Method":"POST","Headers":{{"Content-Type":["application/json"]}},
            "Body":{{"username":"alice","password":"{PASSWORD}"}}}}}},"Metadata":{{}}}}"#
    );
    let r = app.raw("POST", "/token", Some("application/json"), payload.into_bytes(), None).await;
    let (status, _, body) = inner(&r.json());
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_second_factor_and_passkey_routes_take_their_path_from_the_invocation_payload() {
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Passkeys__RpId", "example.test"),
        ("JwtRefreshToken__Passkeys__Origins", "https://app.example.test"),
    ]);
    app.add_user("carol", PASSWORD, &[]);
    let token = access_token(&app.login("carol", PASSWORD).await);
    let auth = json!({"Content-Type": ["application/json"], "Authorization": [format!("Bearer {token}")]});
    // `mfa/{*factor}`: the host hands the rest of the path, slashes included, as one parameter.
    let (_, outer) = app.invoke_with("mfa", "POST", auth.clone(), "", json!({"factor": "totp"}), json!({})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!(status, 201, "{outer}");
    assert!(body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    let code = json!({"code": "000000"}).to_string();
    let (_, outer) =
        app.invoke_with("mfa", "POST", auth.clone(), &code, json!({"factor": "totp/verify"}), json!({})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!((status, body["error"].clone()), (400, json!("invalid_grant")), "a wrong code: {outer}");
    let (_, outer) = app.invoke_with("mfa", "GET", auth.clone(), "", json!({}), json!({})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!((status, body["totp_pending"].clone()), (200, json!(true)), "{outer}");
    let (_, outer) =
        app.invoke_with("passkeys", "POST", auth.clone(), "{}", json!({"path": "register/start"}), json!({})).await;
    let (status, _, body) = inner(&outer);
    assert_eq!(status, 200, "{outer}");
    assert!(body["ceremony"].is_string() && body["options"]["publicKey"]["challenge"].is_string(), "{body}");
    let (_, outer) = app.invoke_with("passkeys", "GET", auth.clone(), "", json!({}), json!({})).await;
    assert_eq!(inner(&outer).0, 200, "{outer}");
    let (_, outer) = app.invoke_with("identities", "GET", auth, "", json!({}), json!({})).await;
    assert_eq!(inner(&outer).0, 200, "{outer}");
}
