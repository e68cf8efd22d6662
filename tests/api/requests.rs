//! Malformed requests: bodies, content types, sizes, routes and methods, and 5xx answers.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

struct Case {
    why: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
}

fn case(why: &'static str, content_type: Option<&'static str>, body: &[u8], status: u16, error: &'static str) -> Case {
    Case { why, content_type, body: body.to_vec(), status, error }
}

async fn check(app: &TestApp, method: &str, path: &str, cases: &[Case]) {
    for c in cases {
        let r = app.raw(method, path, c.content_type, c.body.clone(), None).await;
        assert_error(&r, c.status, c.error, &format!("{method} {path}: {}", c.why));
    }
}

#[tokio::test]
async fn bad_login_bodies_are_refused_with_a_precise_error() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let long_name = format!(r#"{{"username":"{}","password":"x"}}"#, "n".repeat(300));
    let long_username = format!(r#"{{"username":"{}","password":"x"}}"#, "n".repeat(65));
    let long_password = format!(r#"{{"username":"alice","password":"{}"}}"#, "p".repeat(1025));
    let cases = [
        case("malformed JSON", JSON, br#"{"username":"alice","#, 400, "invalid_request"),
        case("JSON array body", JSON, br#"[{"username":"alice","password":"x"}]"#, 400, "invalid_request"),
        case("JSON string body", JSON, br#""alice""#, 400, "invalid_request"),
        case("JSON null body", JSON, b"null", 400, "invalid_request"),
        case("missing username", JSON, br#"{"password":"x"}"#, 400, "invalid_request"),
        case("missing password", JSON, br#"{"username":"alice"}"#, 400, "invalid_request"),
        case("username null", JSON, br#"{"username":null,"password":"x"}"#, 400, "invalid_request"),
        case("number username", JSON, br#"{"username":42,"password":"x"}"#, 400, "invalid_request"),
        case("number password", JSON, br#"{"username":"alice","password":12345678}"#, 400, "invalid_request"),
        case("object password", JSON, br#"{"username":"alice","password":{"a":1}}"#, 400, "invalid_request"),
        case("empty username", JSON, br#"{"username":"","password":"x"}"#, 400, "invalid_request"),
        case("empty password", JSON, br#"{"username":"alice","password":""}"#, 400, "invalid_request"),
        case(
            "grant_type not a string",
            JSON,
            br#"{"grant_type":1,"username":"a","password":"x"}"#,
            400,
            "invalid_request",
        ),
        case(
            "username with a control character",
            JSON,
            b"{\"username\":\"al\\u0000ice\",\"password\":\"x\"}",
            400,
            "invalid_request",
        ),
        case("username over the length limit", JSON, long_name.as_bytes(), 400, "invalid_request"),
        case("username of 65 characters", JSON, long_username.as_bytes(), 400, "invalid_request"),
        case("username with a leading space", JSON, br#"{"username":" alice","password":"x"}"#, 400, "invalid_request"),
        case("password over 1024 bytes", JSON, long_password.as_bytes(), 400, "invalid_request"),
        case("empty body", JSON, b"", 400, "invalid_request"),
        case("empty form body", FORM, b"", 400, "invalid_request"),
        case("non-UTF-8 JSON body", JSON, b"{\"username\":\"al\xffice\",\"password\":\"x\"}", 400, "invalid_request"),
        case("non-UTF-8 form body", FORM, b"grant_type=password&username=\xfe\xff&password=x", 400, "invalid_request"),
        case(
            "repeated form parameter",
            FORM,
            b"grant_type=password&username=alice&username=bob&password=x",
            400,
            "invalid_request",
        ),
        case(
            "repeated grant_type",
            FORM,
            b"grant_type=password&grant_type=password&username=alice&password=x",
            400,
            "invalid_request",
        ),
        case("text/plain body", Some("text/plain"), br#"{"username":"alice","password":"x"}"#, 415, "invalid_request"),
        case("no Content-Type with a body", None, br#"{"username":"alice","password":"x"}"#, 415, "invalid_request"),
        case(
            "JSON in latin1",
            Some("application/json; charset=latin1"),
            br#"{"username":"alice","password":"x"}"#,
            415,
            "invalid_request",
        ),
        case(
            "form in iso-8859-1",
            Some("application/x-www-form-urlencoded; charset=iso-8859-1"),
            b"grant_type=password&username=alice&password=x",
            415,
            "invalid_request",
        ),
        case("XML", Some("application/xml"), b"<login/>", 415, "invalid_request"),
        // Controls: acceptable media types reach the credential check.
        case(
            "JSON with charset=utf-8",
            Some("application/json; charset=utf-8"),
            br#"{"username":"alice","password":"wrong-one"}"#,
            400,
            "invalid_grant",
        ),
        case(
            "JSON with upper-case media type",
            Some("Application/JSON"),
            br#"{"username":"alice","password":"wrong-one"}"#,
            400,
            "invalid_grant",
        ),
    ];
    check(&app, "POST", "/api/token", &cases).await;
}

#[tokio::test]
async fn bad_refresh_bodies_are_refused_with_a_precise_error() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let token = refresh_token(&pair);
    let too_long = format!(r#"{{"refresh_token":"{}"}}"#, "A".repeat(10_000));
    let with_number_access = format!(r#"{{"refresh_token":"{token}","access_token":7}}"#);
    let with_empty_access = format!(r#"{{"refresh_token":"{token}","access_token":""}}"#);
    let cases = [
        case("missing refresh_token", JSON, br#"{"access_token":"x"}"#, 400, "invalid_request"),
        case("number refresh_token", JSON, br#"{"refresh_token":12}"#, 400, "invalid_request"),
        case("array refresh_token", JSON, br#"{"refresh_token":["a"]}"#, 400, "invalid_request"),
        case("empty refresh_token", JSON, br#"{"refresh_token":""}"#, 400, "invalid_request"),
        case("refresh_token over the length limit", JSON, too_long.as_bytes(), 400, "invalid_request"),
        case("number access_token", JSON, with_number_access.as_bytes(), 400, "invalid_request"),
        case("empty access_token", JSON, with_empty_access.as_bytes(), 400, "invalid_request"),
        case("malformed JSON", JSON, b"{refresh_token}", 400, "invalid_request"),
        case("JSON array", JSON, b"[]", 400, "invalid_request"),
        case("empty body", JSON, b"", 400, "invalid_request"),
        case("text/plain", Some("text/plain"), token.as_bytes(), 415, "invalid_request"),
    ];
    check(&app, "POST", "/api/refresh", &cases).await;
    // None of it touched the session.
    assert_token_pair(&app.refresh(&token).await, "the session still works");
}

#[tokio::test]
async fn refresh_tokens_that_are_not_ours_are_invalid_grants() {
    let app = TestApp::spawn(&[]);
    let other = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    other.add_user("alice", PASSWORD, &[]);
    let token = refresh_token(&app.login("alice", PASSWORD).await);
    let foreign = refresh_token(&other.login("alice", PASSWORD).await);
    let len = token.len();
    let rows: Vec<(&str, String)> = vec![
        ("garbage", "not-a-refresh-token".into()),
        ("base64 of nothing useful", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ("characters outside base64url", "!!!!****".into()),
        ("truncated by one character", token[..len - 1].to_string()),
        ("truncated to half", token[..len / 2].to_string()),
        ("extended by a character", format!("{token}A")),
        ("tampered in the middle", tamper(&token, len / 2)),
        ("tampered version byte", tamper(&token, 0)),
        ("tampered session id", tamper(&token, 5)),
        ("tampered user id", tamper(&token, len - 5)),
        ("a token from another server", foreign),
        ("a JWT", access_token(&app.login("alice", PASSWORD).await)),
    ];
    for (why, candidate) in &rows {
        let r = app.refresh(candidate).await;
        assert_invalid_grant(&r, why);
    }
    assert_token_pair(&app.refresh(&token).await, "the real token still works");
}

#[tokio::test]
async fn unknown_functions_and_paths_are_404_json() {
    let app = TestApp::spawn(&[]);
    let rows = [
        ("POST", "/api/nope", "unknown function"),
        ("GET", "/api/nope", "unknown function, GET"),
        ("POST", "/api/token/extra", "path below a function"),
        ("GET", "/api", "the prefix alone"),
        ("GET", "/somewhere/else/entirely", "unknown path"),
        ("POST", "/nope", "unknown function in invocation mode"),
        ("GET", "/token", "invocation route with GET"),
    ];
    for (method, path, why) in rows {
        let r = app.raw(method, path, JSON, br#"{"username":"a","password":"b"}"#.to_vec(), None).await;
        assert_error(&r, 404, "not_found", &format!("{method} {path}: {why}"));
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = TestApp::spawn(&[]);
    let rows = [
        ("GET", "/api/token", "POST, PATCH"),
        ("PUT", "/api/token", "POST, PATCH"),
        ("DELETE", "/api/token", "POST, PATCH"),
        ("PATCH", "/api/refresh", "POST"),
        ("GET", "/api/refresh", "POST"),
        ("POST", "/api/jwks", "GET, HEAD"),
        ("PATCH", "/api/jwks", "GET, HEAD"),
        ("GET", "/api/revoke", "POST, PATCH"),
        ("PUT", "/api/revoke", "POST, PATCH"),
        ("GET", "/api/TOKEN", "POST, PATCH"),
        ("TRACE", "/", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
    ];
    for (method, path, allow) in rows {
        let r = app.raw(method, path, JSON, Vec::new(), None).await;
        let context = format!("{method} {path}");
        assert_error(&r, 405, "method_not_allowed", &context);
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{context}");
    }
}

#[tokio::test]
async fn form_pairs_without_a_name_are_ignored() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r = app
        .post_form(
            "/api/token",
            &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("", "x"), ("", "y")],
        )
        .await;
    assert_token_pair(&r, "unnamed pairs cannot be read, so they cannot conflict");
    let r =
        app.post_form("/api/token", &[("grant_type", "password"), ("username", "alice"), ("username", "bob")]).await;
    assert_invalid_request(&r, "a named parameter given twice is still refused");
}

#[tokio::test]
async fn function_names_are_matched_without_case() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r =
        app.raw("POST", "/api/Token", JSON, json!({"username":"alice","password":PASSWORD}).to_string(), None).await;
    assert_token_pair(&r, "POST /api/Token");
}

fn padded_login(total_len: usize) -> Vec<u8> {
    let head = r#"{"username":"alice","password":"wrong-password","pad":""#;
    let tail = r#""}"#;
    let pad = total_len - head.len() - tail.len();
    format!("{head}{}{tail}", "p".repeat(pad)).into_bytes()
}

#[tokio::test]
async fn a_body_of_exactly_16_kib_is_read() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let body = padded_login(16_384);
    assert_eq!(body.len(), 16_384);
    let r = app.raw("POST", "/api/token", JSON, body, None).await;
    assert_invalid_grant(&r, "16384 bytes is within the limit");
}

#[tokio::test]
async fn a_body_over_16_kib_with_content_length_is_413() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let body = padded_login(16_385);
    let r = app.raw("POST", "/api/token", JSON, body, None).await;
    assert_error(&r, 413, "invalid_request", "16385 bytes with Content-Length");
    let r = app.raw("POST", "/api/refresh", JSON, padded_login(40_000), None).await;
    assert_error(&r, 413, "invalid_request", "40000 bytes to /api/refresh");
}

/// Sends a chunked request of `total` body bytes by hand; returns status line and body.
async fn chunked_post(port: u16, path: &str, total: usize) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let body = padded_login(total);
    let mut framed = Vec::new();
    for chunk in body.chunks(4096) {
        framed.extend_from_slice(&[format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat());
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    // The server may stop reading once the limit is passed: a failed write is not an error here.
    let _ = stream.write_all(&framed).await;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if complete_response(&response) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("response in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete response: {text:?}"));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

fn complete_response(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

#[tokio::test]
async fn a_chunked_body_over_16_kib_is_413() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let (status, body) = chunked_post(app.port, "/api/token", 16_385).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let (status, _) = chunked_post(app.port, "/api/token", 16_000).await;
    assert!(status.starts_with("HTTP/1.1 400"), "a small chunked body is read: {status}");
}

#[tokio::test]
async fn a_store_failure_answers_5xx_without_internals() {
    // Cosmos: an emulator of this test's own, failing every document request from a point on.
    let private = (backend() == Backend::Cosmos).then(crate::emulator::Private::start);
    let config = match &private {
        Some(p) => Config::new().env(CONNECTION_STRING_SETTING, &p.connection_string()),
        None => Config::new(),
    };
    let app = TestApp::start(config);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    // Break the store under the running service.
    let mut tables: Vec<String> = Vec::new();
    match &private {
        Some(p) => p.inject(json!({"status": 503, "count": 1_000_000})).await,
        None => {
            let db = app.store_dir().join("store.db");
            let conn = rusqlite::Connection::open(&db).expect("open store");
            conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
            tables = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
                .expect("list tables");
            assert!(!tables.is_empty());
            for table in &tables {
                conn.execute_batch(&format!("DROP TABLE \"{table}\";")).expect("drop table");
            }
        }
    }
    let answers = [
        ("refresh", app.refresh(&refresh_token(&pair)).await),
        ("login", app.try_login("alice", PASSWORD).await),
        ("failed login", app.try_login("alice", "wrong-password").await),
        ("revoke", app.revoke(&refresh_token(&pair)).await),
    ];
    let path = app.store_dir().display().to_string();
    for (why, r) in &answers {
        assert!((500..600).contains(&r.status), "{why}: expected a 5xx, got {} {}", r.status, r.text());
        let body = r.json();
        assert!(
            ["server_error", "temporarily_unavailable"].contains(&body["error"].as_str().unwrap_or_default()),
            "{why}: {body}"
        );
        let text = r.text().to_ascii_lowercase();
        for internal in ["sqlite", "table", "no such", "store.db", "panic", "error:"] {
            assert!(!text.contains(internal), "{why}: the body reveals {internal:?}: {text}");
        }
        for table in &tables {
            assert!(!text.contains(&table.to_ascii_lowercase()), "{why}: the body names table {table}: {text}");
        }
        assert!(!r.text().contains(&path), "{why}: the body reveals the store path");
    }
}
