//! The Functions app layout the host reads: host.json, one function.json per function, and the
//! example settings. Checked against the code so they cannot drift apart.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use jwt_refresh_token::http::Function;
use jwt_refresh_token::settings::{Env, Mode, Settings, SigningAlgorithm, check_secret_scores, entropy, names};
use jwt_refresh_token::tokens::generate::generate;

fn json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every function of the handler's route table.
fn functions() -> Vec<Function> {
    jwt_refresh_token::http::ROUTES.iter().map(|r| r.function).collect()
}

#[test]
fn host_json_runs_the_handler_with_forwarding_under_api() {
    let host = json("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "handler");
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(host["customHandler"]["enableProxyingHttpRequest"], true);
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api");
}

#[test]
fn every_function_has_one_http_trigger_req_and_one_http_output_res_with_the_served_methods() {
    for f in functions() {
        let path = format!("{}/function.json", f.name());
        let bindings = json(&path)["bindings"].as_array().cloned().unwrap_or_default();
        assert_eq!(bindings.len(), 2, "{path}");
        let trigger = bindings.iter().find(|b| b["type"] == "httpTrigger").expect("httpTrigger");
        assert_eq!(trigger["name"], "req", "{path}");
        assert_eq!(trigger["direction"], "in", "{path}");
        assert_eq!(trigger["authLevel"], "anonymous", "{path}");
        let route = f.route_template();
        assert_eq!(trigger["route"], route.as_str(), "{path}");
        let mut methods: Vec<String> =
            trigger["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_uppercase()).collect();
        methods.sort();
        let mut allowed: Vec<String> = f.allow().split(", ").map(str::to_string).collect();
        allowed.sort();
        assert_eq!(methods, allowed, "{path}: methods must match what the handler serves");
        let output = bindings.iter().find(|b| b["type"] == "http").expect("http output");
        assert_eq!(output["name"], "res", "{path}");
        assert_eq!(output["direction"], "out", "{path}");
    }
}

#[test]
fn the_example_settings_are_complete_and_valid() {
    let example = json("local.settings.json.example");
    let values = example["Values"].as_object().unwrap();
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "custom");
    let pairs = || values.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()));
    // The placeholders for the two secrets are refused, so nobody can run with them by mistake:
    // their characters pass the statistics of `Settings::load`, their words fail the guessing-
    // pattern score that start-up runs right after the port answers…
    let placeholders = Settings::load(&Env::from_pairs(pairs()), Mode::Production).unwrap();
    let scores: Vec<(&'static str, f64)> = placeholders
        .secrets_to_score()
        .iter()
        .map(|(name, value)| (*name, entropy::pattern_bits(std::str::from_utf8(value.expose()).unwrap())))
        .collect();
    assert_eq!(scores.len(), 2);
    let err = check_secret_scores(&scores).unwrap_err();
    assert_eq!(err.setting, names::ALGORITHM_KEY, "{err}");
    assert!(check_secret_scores(&scores[1..]).is_err(), "the rotation secret's placeholder too");
    // …and with generated values in their place, everything else in the example is valid.
    let key = |alg| String::from_utf8(generate(alg).unwrap().value.expose().to_vec()).unwrap();
    let mut env = Env::from_pairs(pairs());
    env.set(names::ALGORITHM_KEY, key(SigningAlgorithm::Hs256));
    env.set(names::ROTATION_SECRET, key(SigningAlgorithm::Hs256));
    Settings::load(&env, Mode::Production).unwrap();
    // Every service setting of the names table is in the example (PreviousKeys is a list of
    // optional entries, documented in docs/security.md#key-rotation), and the example holds no name the table lacks.
    // The sign-in providers are a family of names per provider (docs/federation.md), none by default.
    let listed = |s: &&names::Setting| {
        s.name.starts_with(names::PREFIX) && s.name != names::PREVIOUS_KEYS && !matches!(s.kind, names::Kind::Family(_))
    };
    for setting in names::ALL.iter().filter(listed) {
        assert!(values.contains_key(setting.name), "local.settings.json.example lacks {}", setting.name);
    }
    for name in values.keys().filter(|k| k.starts_with(names::PREFIX)) {
        assert!(names::ALL.iter().any(|s| s.name == name), "{name} is not a setting the handler reads");
    }
}

#[test]
fn openapi_documents_every_function() {
    let spec = std::fs::read_to_string("openapi.yaml").unwrap();
    for f in functions() {
        let path = if f.is_well_known() { f.route_template() } else { f.name().to_string() };
        assert!(spec.contains(&format!("/api/{path}:")), "openapi.yaml lacks /api/{path}");
    }
}

/// `docs/configuration.md` is the settings table rendered: regenerate it with
/// `BLESS=1 cargo test --test layout` after changing `src/settings/names.rs`.
#[test]
fn the_configuration_reference_is_generated_from_the_settings_table() {
    let path = "docs/configuration.md";
    let generated = names::reference_markdown();
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all("docs").unwrap();
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(committed == generated, "{path} is stale: run `BLESS=1 cargo test --test layout` and commit it");
    for s in names::ALL {
        assert!(!s.doc.is_empty(), "{} has a description in the table", s.name);
        assert!(committed.contains(&format!("`{}", s.name)), "{} is in {path}", s.name);
    }
}

/// The value a setting takes when unset, as text the example and the template would write.
fn fixed_default(s: &names::Setting) -> Option<String> {
    match s.default {
        names::DefaultValue::Int(v) => Some(v.to_string()),
        names::DefaultValue::Text(t) => Some(t.to_string()),
        _ => None,
    }
}

/// The defaults stated in `local.settings.json.example` and as `infra/main.bicep` parameter
/// defaults agree with the table (the code reads its defaults from the table).
#[test]
fn the_example_settings_and_the_template_state_the_tables_defaults() {
    let example = json("local.settings.json.example");
    let values = example["Values"].as_object().unwrap();
    let mut compared = 0;
    for s in names::ALL {
        let (Some(default), Some(value)) = (fixed_default(s), values.get(s.name).and_then(|v| v.as_str())) else {
            continue;
        };
        // Examples of a choice the table allows, not statements of its default.
        if s.name == names::ALGORITHM || s.name == names::REGISTRATION_MODE && value == "open" {
            continue;
        }
        assert_eq!(value, default, "local.settings.json.example: {} is the default", s.name);
        compared += 1;
    }
    assert!(compared >= 15, "the example states most defaults ({compared})");

    // `@description('JwtRefreshToken__X…')` then `param name type = default`.
    let bicep = std::fs::read_to_string("infra/main.bicep").unwrap();
    let mut described: Option<&'static names::Setting> = None;
    let mut checked = Vec::new();
    for line in bicep.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("@description('") {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            described = names::Setting::find(&name);
        } else if let Some(param) = line.strip_prefix("param ") {
            let Some(s) = described.take() else { continue };
            let Some((_, default)) = param.split_once('=') else { continue };
            let default = default.trim().trim_matches('\'');
            // An empty default is one the template computes (the Issuer from the app's host name).
            if default.is_empty() {
                continue;
            }
            // The template deploys ES256 on purpose (resource servers verify with JWKS); the code
            // keeps HS256 when unset, as the .NET package it replaces.
            if s.name == names::ALGORITHM {
                continue;
            }
            let expected = fixed_default(s)
                .unwrap_or_else(|| panic!("infra/main.bicep defaults {}, which has no fixed default", s.name));
            assert_eq!(default, expected, "infra/main.bicep: the default of {} (param {param})", s.name);
            checked.push(s.name);
        }
    }
    assert!(checked.len() >= 8, "the template's setting parameters were found: {checked:?}");
}
