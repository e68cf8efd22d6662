//! Start-up configuration: every bad setting stops the process quickly with one line naming it;
//! `--dev` fills in what is missing.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Whether `line` names `setting` as a whole word (so `…Algorithm` does not match `…AlgorithmKey`).
fn names_setting(line: &str, setting: &str) -> bool {
    line.match_indices(setting).any(|(at, _)| {
        line[at + setting.len()..].chars().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
    })
}

#[tokio::test]
async fn each_bad_setting_stops_start_up_with_one_line_naming_it() {
    let es256_pem = fixture("es256-private.pem");
    let rows: Vec<(&str, Config, &str)> = vec![
        ("Issuer missing", Config::new().without(ISSUER_SETTING), ISSUER_SETTING),
        ("Issuer blank", Config::new().env(ISSUER_SETTING, "   "), ISSUER_SETTING),
        ("Audience missing", Config::new().without(AUDIENCE_SETTING), AUDIENCE_SETTING),
        ("AlgorithmKey missing", Config::new().without(KEY_SETTING), KEY_SETTING),
        ("AlgorithmKey of 10 bytes", Config::new().env(KEY_SETTING, "0123456789"), KEY_SETTING),
        ("Algorithm RS999", Config::new().env(ALGORITHM_SETTING, "RS999"), ALGORITHM_SETTING),
        (
            "ClockSkewMs not a number",
            Config::new().env("JwtRefreshToken__Descriptor__ClockSkewMs", "abc"),
            "JwtRefreshToken__Descriptor__ClockSkewMs",
        ),
        ("ES256 with an HS-style key", Config::new().env(ALGORITHM_SETTING, "ES256"), KEY_SETTING),
        (
            "EdDSA with a P-256 key",
            Config::new().env(ALGORITHM_SETTING, "EdDSA").env(KEY_SETTING, &es256_pem),
            KEY_SETTING,
        ),
        (
            "a previous key that is a private key",
            Config::new().env("JwtRefreshToken__Descriptor__PreviousKeys__0", &es256_pem),
            "JwtRefreshToken__Descriptor__PreviousKeys__0",
        ),
        (
            "a previous HS256 key of 5 bytes",
            Config::new().env("JwtRefreshToken__Descriptor__PreviousKeys__0", "short"),
            "JwtRefreshToken__Descriptor__PreviousKeys__0",
        ),
        (
            "CreateExpiresInMs zero",
            Config::new().env("JwtRefreshToken__Expires__CreateExpiresInMs", "0"),
            "JwtRefreshToken__Expires__CreateExpiresInMs",
        ),
        (
            "RefreshExpiresInMs a fraction",
            Config::new().env("JwtRefreshToken__Expires__RefreshExpiresInMs", "1.5"),
            "JwtRefreshToken__Expires__RefreshExpiresInMs",
        ),
        (
            "ReuseGraceMs negative",
            Config::new().env("JwtRefreshToken__Rotation__ReuseGraceMs", "-5"),
            "JwtRefreshToken__Rotation__ReuseGraceMs",
        ),
        (
            "Rotation Secret too short",
            Config::new().env("JwtRefreshToken__Rotation__Secret", "tooshort"),
            "JwtRefreshToken__Rotation__Secret",
        ),
        (
            "MaxFailures zero",
            Config::new().env("JwtRefreshToken__Login__MaxFailures", "0"),
            "JwtRefreshToken__Login__MaxFailures",
        ),
        (
            "LockoutMs not a number",
            Config::new().env("JwtRefreshToken__Login__LockoutMs", "soon"),
            "JwtRefreshToken__Login__LockoutMs",
        ),
        (
            "port not a number",
            Config::new().env("FUNCTIONS_CUSTOMHANDLER_PORT", "http"),
            "FUNCTIONS_CUSTOMHANDLER_PORT",
        ),
        (
            "Cosmos connection string without a key",
            Config::new().env(CONNECTION_STRING_SETTING, "AccountEndpoint=http://127.0.0.1:9/;"),
            CONNECTION_STRING_SETTING,
        ),
        (
            "both a Cosmos endpoint and a connection string",
            Config::new()
                .env("JwtRefreshToken__Cosmos__AccountEndpoint", "https://example.documents.azure.com/")
                .env(CONNECTION_STRING_SETTING, "AccountEndpoint=http://127.0.0.1:9/;AccountKey=a2V5;"),
            CONNECTION_STRING_SETTING,
        ),
    ];
    let in_azure = Config::new()
        .without(CONNECTION_STRING_SETTING)
        .env("JwtRefreshToken__Cosmos__AccountEndpoint", "https://example.documents.azure.com:443/")
        .env("WEBSITE_SITE_NAME", "my-app")
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
        .env("IDENTITY_HEADER", "h");
    let rows = rows.into_iter().chain([(
        "in Azure with a Cosmos endpoint but no AZURE_CLIENT_ID",
        in_azure.without("AZURE_CLIENT_ID"),
        "AZURE_CLIENT_ID",
    )]);
    // The embedded store's path only matters when it is the store.
    let embedded_rows =
        [("store path below a file", Config::new().env(PATH_SETTING, "/proc/version/store"), PATH_SETTING)];
    let rows = rows.into_iter().chain(embedded_rows.into_iter().filter(|_| backend() == Backend::Embedded));
    for (why, config, setting) in rows {
        let out = run_to_exit(&config);
        assert!(!out.status.success(), "{why}: must exit non-zero ({:?})", out.status);
        assert!(out.elapsed < Duration::from_secs(5), "{why}: took {:?}", out.elapsed);
        // One line naming the setting; a missing one is followed by the hint line.
        let lines: Vec<&str> =
            out.stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("hint: ")).collect();
        assert_eq!(lines.len(), 1, "{why}: one line on stderr, got {:?}", out.stderr);
        assert!(names_setting(lines[0], setting), "{why}: {:?} must name {setting}", lines[0]);
        assert!(!out.stderr.contains("panicked"), "{why}: {}", out.stderr);
        assert!(!out.stderr.contains(KEY), "{why}: the key must not be printed: {}", out.stderr);
        assert!(!out.stderr.contains("BEGIN PRIVATE KEY"), "{why}: {}", out.stderr);
        assert!(!out.stdout.contains("\"listening\""), "{why}: must not have started: {}", out.stdout);
    }
}

fn dev_config() -> Config {
    Config::new().arg("--dev").without(ISSUER_SETTING).without(AUDIENCE_SETTING).without(KEY_SETTING)
}

#[tokio::test]
async fn dev_mode_starts_without_issuer_audience_or_key_and_serves_a_login() {
    let app = TestApp::start(dev_config());
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let claims = jwt_claims(&access_token(&pair));
    assert!(claims["iss"].as_str().is_some_and(|s| !s.is_empty()), "{claims}");
    assert!(claims["aud"].as_str().is_some_and(|s| !s.is_empty()), "{claims}");
    assert_token_pair(&app.refresh(&refresh_token(&pair)).await, "refresh in dev mode");
}

#[tokio::test]
async fn dev_mode_keeps_its_generated_key_across_restarts() {
    let app = TestApp::start(dev_config());
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let app = app.restart();
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "global"}), &access_token(&pair)).await;
    assert_eq!(r.status, 200, "the access token from before the restart verifies: {}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 1}));
}

#[tokio::test]
async fn an_unreachable_cosmos_account_answers_503_and_never_delays_readiness() {
    // Entra ID against an address nothing listens on: no credential and no server.
    let app = TestApp::start(
        Config::new()
            .without(CONNECTION_STRING_SETTING)
            .env("JwtRefreshToken__Cosmos__AccountEndpoint", "http://127.0.0.1:9/")
            .env("JwtRefreshToken__Cosmos__RequestTimeoutMs", "1000"),
    );
    let ready = app.raw("GET", "/", None, Vec::new(), None).await;
    assert_eq!(ready.status, 200, "the readiness probe answers while Cosmos is unreachable");
    let login = app.try_login("alice", PASSWORD).await;
    assert_error(&login, 503, "temporarily_unavailable", "login without a reachable store");
    assert!(login.header("retry-after").is_some(), "503 carries Retry-After");
    let refresh = app.post_json("/api/refresh", &json!({"refresh_token": "A".repeat(80)})).await;
    assert_eq!(refresh.status, 400, "a malformed token is refused before any store access: {}", refresh.text());
    assert!(app.logs().iter().all(|l| !l.contains("panicked")));
}

#[tokio::test]
async fn the_store_is_connected_at_start_up_before_any_request() {
    let app = TestApp::spawn(&[]);
    if backend() == Backend::Cosmos {
        let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains("connected to Cosmos DB"))).await;
        assert!(
            logs.iter().any(|l| l.contains("connected to Cosmos DB")),
            "the Cosmos client, its token and container metadata are ready without a request: {logs:?}"
        );
        let listening = logs.iter().position(|l| l.contains("\"listening\""));
        let connected = logs.iter().position(|l| l.contains("connected to Cosmos DB"));
        assert!(listening < connected, "readiness comes first: {logs:?}");
    }
    let ready = app.raw("GET", "/", None, Vec::new(), None).await;
    assert_eq!(ready.status, 200);
}

#[test]
fn cosmos_init_creates_the_database_and_containers_or_names_the_missing_setting() {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["cosmos", "init"]).env_remove(CONNECTION_STRING_SETTING);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_lowercase().starts_with("jwtrefreshtoken") {
            cmd.env_remove(&name);
        }
    }
    if backend() == Backend::Cosmos {
        let database = format!("init-{}", std::process::id());
        cmd.env(CONNECTION_STRING_SETTING, crate::emulator::connection_string())
            .env("JwtRefreshToken__Cosmos__DatabaseName", &database);
        let first = cmd.output().expect("run cosmos init");
        let stdout = String::from_utf8_lossy(&first.stdout);
        assert!(first.status.success(), "{first:?}");
        assert!(stdout.contains("Cosmos DB ready") && stdout.contains(&database), "{stdout}");
        let again = cmd.output().expect("run cosmos init again");
        assert!(again.status.success(), "init is idempotent: {again:?}");
    } else {
        let out = cmd.output().expect("run cosmos init");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(CONNECTION_STRING_SETTING), "{stderr}");
    }
}

#[tokio::test]
async fn start_up_names_every_missing_setting_at_once_and_says_how_to_start_locally() {
    let config = Config::new()
        .without(ISSUER_SETTING)
        .without(AUDIENCE_SETTING)
        .without(KEY_SETTING)
        .env("JwtRefreshToken__Login__LockoutMs", "soon");
    let out = run_to_exit(&config);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    for setting in [ISSUER_SETTING, AUDIENCE_SETTING, KEY_SETTING, "JwtRefreshToken__Login__LockoutMs"] {
        assert_eq!(
            errors.iter().filter(|l| names_setting(l, setting)).count(),
            1,
            "{setting} is named on a line of its own: {}",
            out.stderr
        );
    }
    assert_eq!(errors.len(), 4, "{}", out.stderr);
    let hint = out.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap_or_default();
    assert!(hint.contains("--dev") && hint.contains("local.settings.json.example"), "{}", out.stderr);
}

#[tokio::test]
async fn a_misspelt_setting_is_a_warning_with_the_name_meant_and_an_error_when_strict() {
    let typo = "JwtRefreshToken__Descriptor__Isuer";
    let app = TestApp::start(Config::new().env(typo, "https://typo.test"));
    let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains("did you mean"))).await;
    let warning = logs.iter().find(|l| l.contains("did you mean")).cloned().unwrap_or_default();
    assert!(warning.contains("WARN") && warning.contains(ISSUER_SETTING), "{logs:?}");
    assert!(!warning.contains("https://typo.test"), "values are never logged: {warning}");
    assert_eq!(app.raw("GET", "/", None, Vec::new(), None).await.status, 200, "a warning does not stop start-up");

    let out = run_to_exit(&Config::new().env(typo, "https://typo.test").env("JwtRefreshToken__StrictSettings", "true"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("did you mean JwtRefreshToken__Descriptor__Issuer?"), "{}", out.stderr);
    assert!(out.stderr.contains("JwtRefreshToken__StrictSettings"), "{}", out.stderr);
}

#[tokio::test]
async fn dev_mode_fills_in_the_key_for_every_spelling_of_hs256() {
    for spelling in ["HMACSHA256", "hs256", "HMAC-SHA256"] {
        let app = TestApp::start(dev_config().env(ALGORITHM_SETTING, spelling));
        app.add_user("alice", PASSWORD, &[]);
        let pair = app.login("alice", PASSWORD).await;
        assert!(pair["access_token"].is_string(), "{spelling}: {pair}");
    }
}

#[test]
fn help_points_to_the_settings_reference() {
    let out = std::process::Command::new(BIN).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("docs/configuration.md"));
}
