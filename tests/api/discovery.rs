//! Discovery metadata (OpenID Connect Discovery 1.0, RFC 8414): served under the route prefix in
//! both host modes, cacheable, and true: every endpoint it names answers as the document says.

use serde_json::{Value, json};

use crate::helpers::*;

const DOCUMENTS: [&str; 2] = ["openid-configuration", "oauth-authorization-server"];

#[tokio::test]
async fn both_documents_name_the_issuer_exactly_and_only_endpoints_that_work() {
    let issuer = "https://tokens.example/api";
    let docs = "https://docs.tokens.example/http-api";
    let app = TestApp::spawn(&[(ISSUER_SETTING, issuer), ("JwtRefreshToken__Discovery__ServiceDocumentation", docs)]);
    app.add_user("alice", PASSWORD, &[]);
    for doc in DOCUMENTS {
        let path = format!("/api/.well-known/{doc}");
        let r = app.request("GET", &path, &[], vec![]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("cache-control").as_deref(), Some("public, max-age=3600"), "{path}: cacheable");
        let meta = r.json();
        assert_eq!(meta["issuer"], issuer, "{path}: the configured Issuer, exactly");
        for (field, route) in [
            ("token_endpoint", "token"),
            ("revocation_endpoint", "revoke"),
            ("jwks_uri", "jwks"),
            ("introspection_endpoint", "introspect"),
        ] {
            assert_eq!(meta[field], format!("{issuer}/{route}"), "{path}: {field}");
        }
        assert_eq!(meta["introspection_endpoint_auth_methods_supported"], json!(["client_secret_basic"]), "{path}");
        let grants = json!(["password", "refresh_token", "urn:ietf:params:oauth:grant-type:mfa-otp"]);
        assert_eq!(meta["grant_types_supported"], grants, "{path}: the token-exchange grant only with a provider");
        assert_eq!(meta["token_endpoint_auth_methods_supported"], json!(["none"]));
        assert_eq!(meta["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA", "RS256"]), "{path}");
        assert_eq!(meta["service_documentation"], docs, "{path}: as configured");
        for absent in ["authorization_endpoint", "userinfo_endpoint", "id_token_signing_alg_values_supported"] {
            assert!(meta.get(absent).is_none(), "{path}: {absent} is not offered, so not listed");
        }
        let head = app.request("HEAD", &path, &[], vec![]).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD {path} has no body");
    }
    // The token endpoint it names takes both listed grants as a form (RFC 6749 §4.3, §6).
    let login =
        app.post_form("/api/token", &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let refresh = app
        .post_form("/api/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token(&login.json()))])
        .await;
    assert_eq!(refresh.status, 200, "{}", refresh.text());
    // The introspection endpoint it names takes client_secret_basic.
    let (client, secret) = app.add_client("rs");
    let r = app.introspect(&access_token(&refresh.json()), &client, &secret).await;
    assert_eq!(r.json()["active"], true, "{}", r.text());
    let r = app.introspect(&access_token(&refresh.json()), &client, "not-the-secret").await;
    assert_eq!(r.status, 401, "{}", r.text());
}

#[tokio::test]
async fn the_documents_answer_in_invocation_mode_and_nowhere_else() {
    let app = TestApp::spawn(&[]);
    for doc in DOCUMENTS {
        let (status, outer) = app.invoke(doc, "GET", json!({}), "").await;
        assert_eq!(status, 200, "{outer}");
        let (inner_status, headers, body) = inner(&outer);
        assert_eq!(inner_status, 200, "{outer}");
        assert_eq!(headers["Cache-Control"], "public, max-age=3600", "{outer}");
        assert_eq!(body["issuer"], ISSUER, "{outer}");
        assert!(body.get("service_documentation").is_none(), "not configured, so not listed: {body}");
    }
    for path in ["/api/openid-configuration", "/api/.well-known/jwks", "/api/.well-known/other", "/api/.well-known"] {
        let r = app.request("GET", path, &[], vec![]).await;
        assert_error(&r, 404, "not_found", path);
    }
    let r = app.request("POST", "/api/.well-known/openid-configuration", &[], vec![]).await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    let _: Value = r.json();
}

#[tokio::test]
async fn an_issuer_clients_could_not_reach_is_a_start_up_warning_naming_it() {
    for (issuer, problem) in
        [("http://tokens.example/api", "not an https URL"), ("https://tokens.example", "does not end in /api")]
    {
        let app = TestApp::spawn(&[(ISSUER_SETTING, issuer)]);
        let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains(problem))).await;
        let warning = logs.iter().find(|l| l.contains(problem)).cloned().unwrap_or_default();
        assert!(warning.contains("WARN") && warning.contains(ISSUER_SETTING), "{issuer}: {logs:?}");
    }
    let app = TestApp::spawn(&[(ISSUER_SETTING, "https://tokens.example/api")]);
    assert_eq!(app.request("GET", "/", &[], vec![]).await.status, 200);
    let logs = app.logs();
    assert!(
        !logs.iter().any(|l| l.contains(ISSUER_SETTING) && l.contains("WARN")),
        "a good Issuer warns nothing: {logs:?}"
    );
}
