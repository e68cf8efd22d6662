//! Logs: JSON lines on stdout, one `request` line per request, and no secrets.

use serde_json::{Value, json};

use crate::helpers::*;

fn request_lines(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == "request").collect()
}

#[tokio::test]
async fn logs_are_json_lines_with_a_request_line_each_and_no_secrets() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let wrong_password = "wrong-password-that-must-not-be-logged";
    assert_invalid_grant(&app.try_login("alice", wrong_password).await, "wrong password");
    let first = app.login("alice", PASSWORD).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    let bogus = tamper(&refresh_token(&second), 60);
    assert_invalid_grant(&app.refresh(&bogus).await, "tampered token");
    let scope = app.post_json_bearer("/api/revoke", &json!({"scope": "others"}), &access_token(&second)).await;
    assert_eq!(scope.status, 200);
    assert_eq!(app.revoke(&refresh_token(&second)).await.status, 200);
    let payload = json!({"Data": {"req": {
        "Method": "POST",
        "Headers": json_headers(),
        "Body": json!({"username": "alice", "password": PASSWORD}).to_string(),
    }}});
    let headers = [
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Azure-Functions-InvocationId".to_string(), "invocation-42".to_string()),
    ];
    let r = app.request("POST", "/token", &headers, payload.to_string().into_bytes()).await;
    let (_, _, invoked) = inner(&r.json());

    let lines = app.wait_for_logs(|lines| request_lines(lines).len() >= 7).await;
    let requests = request_lines(&lines);
    assert_eq!(requests.len(), 7, "one request line per request: {lines:#?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    for r in &requests {
        assert!(r["function"].is_string(), "{r}");
        assert!(r["status"].is_u64(), "{r}");
        assert!(r["outcome"].is_string(), "{r}");
        assert!(r["latency_ms"].is_number(), "{r}");
    }
    let find =
        |function: &str, status: u64| requests.iter().find(|r| r["function"] == function && r["status"] == status);
    assert_eq!(find("token", 400).map(|r| r["outcome"].clone()), Some(json!("invalid_grant")), "{requests:#?}");
    assert_eq!(find("token", 200).map(|r| r["outcome"].clone()), Some(json!("ok")), "{requests:#?}");
    assert!(find("refresh", 200).is_some(), "{requests:#?}");
    assert!(find("revoke", 200).is_some(), "{requests:#?}");
    let invocation = requests.iter().find(|r| r["mode"] == "Invocation").expect("the invocation's line");
    assert_eq!(invocation["span"]["invocation_id"], "invocation-42", "{invocation}");
    assert!(invocation["span"]["user_id"].is_string(), "the span names the user once known: {invocation}");

    let mut secrets = vec![
        ("the password", PASSWORD.to_string()),
        ("the wrong password", wrong_password.to_string()),
        ("the signing key", KEY.to_string()),
        ("the tampered refresh token", bogus),
        ("the Cosmos account key", crate::emulator::EMULATOR_KEY.to_string()),
    ];
    for (name, pair) in [("login", &first), ("refresh", &second), ("invocation", &invoked)] {
        secrets.push((name, refresh_token(pair)));
        secrets.push((name, access_token(pair)));
        // A token's signature alone is as good as the token to an attacker who has the rest.
        secrets.push((name, access_token(pair).rsplit('.').next().unwrap().to_string()));
    }
    let all = lines.join("\n");
    for (what, secret) in &secrets {
        assert!(!all.contains(secret.as_str()), "the logs contain {what}: {secret}");
    }
    assert!(!all.contains("$argon2"), "the logs contain a password hash");
    assert_eq!(app.stderr(), Vec::<String>::new(), "a serving process writes nothing to stderr");
}
