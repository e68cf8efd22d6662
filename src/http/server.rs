//! warp adapter: one catch-all filter that reads method, path, headers and a size-limited body and
//! hands them to [`Api::handle`], in forwarding mode (`/api/<function>`) or invocation mode
//! (`POST /<function>`). `GET /` answers the host's readiness probe.

use std::convert::Infallible;

use futures_util::{Stream, StreamExt as _};
use warp::Filter as _;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Function, MAX_BODY_BYTES, Mode, invocation};

/// Limit for a whole invocation payload (the inner body is held to [`MAX_BODY_BYTES`] separately).
const MAX_INVOCATION_BYTES: usize = 256 * 1024;
const ROUTE_PREFIX: &str = "api";

/// Reads at most `limit` bytes; `None` when the body is larger (reading stops there).
async fn read_limited<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Option<Vec<u8>>, warp::Error>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let declared = headers
        .get(warp::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk?;
        if out.len() + chunk.remaining() > limit {
            return Ok(None);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(Some(out))
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string()))).collect()
}

fn to_warp(response: &ApiResponse) -> Response {
    let mut builder = warp::http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value);
    }
    builder.body(response.body.clone().into()).unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR))
}

fn plain(status: StatusCode) -> Response {
    let mut r = Response::new(warp::hyper::body::Bytes::new().into());
    *r.status_mut() = status;
    r
}

fn invocation_response(response: &ApiResponse) -> Response {
    let mut r = Response::new(invocation::wrap(response).into());
    r.headers_mut().insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    r
}

/// Dispatches one raw request.
async fn dispatch<S, B>(api: Api, method: Method, path: String, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let invocation_id = headers.get("x-azure-functions-invocationid").and_then(|v| v.to_str().ok()).map(str::to_string);
    match segments.as_slice() {
        [""] if method == Method::GET || method == Method::HEAD => {
            let mut ok = ApiResponse::json(200, &serde_json::json!({ "status": "ready" }));
            ok.headers.push(("Cache-Control", "no-store".into()));
            to_warp(&ok)
        }
        [""] => to_warp(&Api::reject(method.as_str(), None, Mode::Forwarded, ApiError::MethodNotAllowed("GET"))),
        [prefix, name] if prefix.eq_ignore_ascii_case(ROUTE_PREFIX) => {
            let (body, body_too_large) = match read_limited(&headers, body, MAX_BODY_BYTES).await {
                Ok(Some(b)) => (b, false),
                Ok(None) => (Vec::new(), true),
                Err(_) => {
                    return to_warp(
                        &ApiError::InvalidRequest("the request body could not be read".into()).into_response(),
                    );
                }
            };
            let req = ApiRequest {
                method: method.as_str().to_string(),
                function: Function::from_name(name),
                headers: header_pairs(&headers),
                body,
                body_too_large,
                mode: Mode::Forwarded,
                invocation_id,
            };
            to_warp(&api.handle(req).await)
        }
        [name] if method == Method::POST && Function::from_name(name).is_some() => {
            let request = match read_limited(&headers, body, MAX_INVOCATION_BYTES).await {
                Ok(Some(payload)) => invocation::parse(Function::from_name(name), &payload, invocation_id),
                Ok(None) => Err(ApiError::PayloadTooLarge),
                Err(_) => Err(ApiError::InvalidRequest("the request body could not be read".into())),
            };
            let response = match request {
                Ok(req) => api.handle(req).await,
                Err(e) => Api::reject(method.as_str(), Function::from_name(name), Mode::Invocation, e),
            };
            invocation_response(&response)
        }
        _ => {
            let e = ApiError::NotFound("no such route; functions are served under /api/");
            to_warp(&Api::reject(method.as_str(), None, Mode::Forwarded, e))
        }
    }
}

/// The warp filter serving `api`.
pub fn routes(
    api: Api,
) -> impl warp::Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |method: Method, path: warp::path::FullPath, headers: HeaderMap, body| {
            let api = api.clone();
            async move { dispatch(api, method, path.as_str().to_string(), headers, body).await }
        })
        .recover(|_rejection: warp::Rejection| async move {
            Ok::<_, Infallible>(to_warp(
                &ApiError::InvalidRequest("the request could not be read".into()).into_response(),
            ))
        })
        .unify()
}
