//! The invocation-payload mode of the Functions host (forwarding off): `POST /<function>` with
//! `{"Data":{"req":{Method,Headers,Body,…}},"Metadata":{…}}`, answered with HTTP 200 and
//! `{"Outputs":{"res":{statusCode,headers,body}},"Logs":[],"ReturnValue":null}`. Field names are
//! matched without case, header values may be arrays or strings, `Query` may be an object or a
//! string. `Metadata` can repeat body fields (secrets) and is never read or logged.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::{ApiRequest, ApiResponse, Function, MAX_BODY_BYTES, Mode};

/// Name of the trigger binding in every `function.json`.
pub const TRIGGER_BINDING: &str = "req";
/// Name of the http output binding in every `function.json`.
pub const OUTPUT_BINDING: &str = "res";

fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn bad(what: &str) -> ApiError {
    ApiError::InvalidRequest(format!("malformed invocation payload: {what}"))
}

/// Reads an invocation payload for `function` into an [`ApiRequest`], its client address from
/// the envelope's `X-Forwarded-For` with `trusted_proxy_hops` (never the TCP peer, the host).
pub fn parse(
    function: Option<Function>,
    payload: &[u8],
    invocation_id: Option<String>,
    peer: Option<std::net::IpAddr>,
    trusted_proxy_hops: usize,
) -> Result<ApiRequest, ApiError> {
    // Strict for the whole payload: a body the host hands over already parsed (a JSON object, not
    // a string) must not lose a repeated key to "last one wins" before the body's own strict
    // parser could refuse it.
    let value: Value = super::body::without_repeats(payload)
        .map_err(|e| if e.is_data() { bad("a key is repeated") } else { bad("not JSON") })?;
    let root = value.as_object().ok_or_else(|| bad("not an object"))?;
    let data = get_ci(root, "Data").and_then(Value::as_object).ok_or_else(|| bad("no Data object"))?;
    let req = get_ci(data, TRIGGER_BINDING).and_then(Value::as_object).ok_or_else(|| bad("no Data.req object"))?;
    let method = get_ci(req, "Method").and_then(Value::as_str).ok_or_else(|| bad("no Data.req.Method"))?;
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| bad("invalid Method"))?;
    let mut headers = http::HeaderMap::new();
    if let Some(map) = get_ci(req, "Headers").and_then(Value::as_object) {
        for (name, values) in map {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("invalid header name"))?;
            let values: Vec<&str> = match values {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => return Err(bad("header values must be strings or arrays of strings")),
            };
            for v in values {
                let v = http::HeaderValue::from_str(v).map_err(|_| bad("invalid header value"))?;
                headers.append(name.clone(), v);
            }
        }
    }
    let body = match get_ci(req, "Body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        // Some hosts hand over a JSON body already parsed.
        Some(other) => other.to_string().into_bytes(),
    };
    let body_too_large = body.len() > MAX_BODY_BYTES;
    // The route parameter (`sessions/{id}`) comes in `Params`; the query in `Query` (an object of
    // strings, or a JSON string of one).
    let param = function.and_then(Function::parameter).and_then(|name| {
        get_ci(req, "Params").and_then(Value::as_object).and_then(|p| get_ci(p, name)).and_then(Value::as_str)
    });
    let query = match get_ci(req, "Query") {
        Some(Value::Object(map)) => Some(map.clone()),
        Some(Value::String(s)) => serde_json::from_str::<Map<String, Value>>(s).ok(),
        _ => None,
    }
    .map(|map| {
        let pairs: Vec<(String, String)> =
            map.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))).collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    })
    .filter(|q| !q.is_empty());
    Ok(ApiRequest {
        method,
        function,
        body: if body_too_large { Vec::new() } else { body },
        body_too_large,
        mode: Mode::Invocation,
        invocation_id,
        peer,
        // The TCP peer is the Functions host, never the client: only a forwarded address counts.
        client: super::client_address(&headers, trusted_proxy_hops, None),
        headers,
        param: param.filter(|p| !p.is_empty()).map(str::to_string),
        query,
    })
}

/// Wraps a response as the host expects it (always sent with HTTP 200).
///
/// A header with several values (`Set-Cookie` of cookie transport) is sent as a JSON array of
/// strings, one per value.
pub fn wrap(response: &ApiResponse) -> Vec<u8> {
    let mut headers = Map::new();
    for name in response.headers.keys() {
        let values: Vec<Value> = response
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| Value::String(v.to_string()))
            .collect();
        let value =
            if values.len() == 1 { values.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(values) };
        headers.insert(canonical(name.as_str()), value);
    }
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let outer = serde_json::json!({
        "Outputs": { OUTPUT_BINDING: { "statusCode": response.status.as_u16(), "headers": headers, "body": body } },
        "Logs": [],
        "ReturnValue": null,
    });
    outer.to_string().into_bytes()
}

/// `content-type` → `Content-Type`, as the host's examples write header names (and the usual
/// spelling of the few names that are not capitalised word by word).
fn canonical(name: &str) -> String {
    match name {
        "www-authenticate" => return "WWW-Authenticate".into(),
        "x-xsrf-token" => return "X-XSRF-TOKEN".into(),
        _ => {}
    }
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_payload_shape() {
        let payload = br#"{"Data":{"req":{"Url":"https://h/api/token?a=1","Method":"post","Query":"{\"a\":\"1\"}",
            "Headers":{"Content-Type":["application/json"],"X-One":"v"},"Params":{},"Body":"{\"username\":\"a\"}"}},
            "Metadata":{"Query":{},"sys":{"MethodName":"token"}}}"#;
        let req = parse(Some(Function::Token), payload, None, None, 1).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("x-one"), Some("v"));
        assert_eq!(req.body, br#"{"username":"a"}"#);
    }

    #[test]
    fn field_names_are_matched_without_case_and_body_may_be_parsed_json() {
        let payload = br#"{"data":{"REQ":{"method":"PATCH","headers":{},"body":{"refresh_token":"x"}}}}"#;
        let req = parse(Some(Function::Token), payload, None, None, 1).unwrap();
        assert_eq!(req.method, "PATCH");
        assert_eq!(req.body, br#"{"refresh_token":"x"}"#);
    }

    #[test]
    fn malformed_payloads_are_invalid_requests() {
        for bad in [
            &b"nope"[..],
            b"[]",
            b"{}",
            br#"{"Data":{}}"#,
            br#"{"Data":{"req":{}}}"#,
            br#"{"Data":{"req":{"Method":"GET","Headers":{"a":1}}}}"#,
        ] {
            assert!(
                matches!(parse(None, bad, None, None, 1), Err(ApiError::InvalidRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_inner_bodies_are_flagged() {
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let payload = serde_json::json!({"Data":{"req":{"Method":"POST","Body":big}}}).to_string();
        let req = parse(Some(Function::Token), payload.as_bytes(), None, None, 1).unwrap();
        assert!(req.body_too_large);
        assert!(req.body.is_empty());
    }

    #[test]
    fn wraps_status_headers_and_body() {
        let r = ApiResponse::json(http::StatusCode::BAD_REQUEST, &serde_json::json!({"error":"invalid_request"}));
        let out: Value = serde_json::from_slice(&wrap(&r)).unwrap();
        assert_eq!(out["Outputs"]["res"]["statusCode"], 400);
        assert_eq!(out["Outputs"]["res"]["headers"]["Content-Type"], "application/json");
        assert_eq!(out["Outputs"]["res"]["body"], r#"{"error":"invalid_request"}"#);
        assert_eq!(out["ReturnValue"], Value::Null);
        assert_eq!(out["Logs"], serde_json::json!([]));
    }
}
