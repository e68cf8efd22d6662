//! Request bodies: JSON objects or RFC 6749 form bodies, read into one field view with typed,
//! checked accessors, so every handler reports bad input the same way.

use super::ApiRequest;
use super::error::ApiError;

/// The fields of a request body.
#[derive(Debug)]
pub enum Fields {
    /// A JSON object.
    Json(serde_json::Map<String, serde_json::Value>),
    /// `application/x-www-form-urlencoded` pairs.
    Form(Vec<(String, String)>),
}

enum Kind {
    Json,
    Form,
}

fn content_kind(req: &ApiRequest) -> Result<Kind, ApiError> {
    let Some(raw) = req.header("content-type") else { return Err(ApiError::UnsupportedMediaType) };
    let mut parts = raw.split(';');
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") && !value.eq_ignore_ascii_case("utf8") {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
    }
    match mime.as_str() {
        "application/json" => Ok(Kind::Json),
        "application/x-www-form-urlencoded" => Ok(Kind::Form),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(Kind::Json),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

impl Fields {
    /// Parses the request's body according to its `Content-Type`.
    pub fn parse(req: &ApiRequest) -> Result<Self, ApiError> {
        if req.body_too_large {
            return Err(ApiError::PayloadTooLarge);
        }
        if req.body.is_empty() {
            return Err(ApiError::InvalidRequest("a request body is required".into()));
        }
        let kind = content_kind(req)?;
        let text = std::str::from_utf8(&req.body)
            .map_err(|_| ApiError::InvalidRequest("the request body is not valid UTF-8".into()))?;
        match kind {
            Kind::Json => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => Ok(Self::Json(map)),
                Ok(_) => Err(ApiError::InvalidRequest("the JSON body must be an object".into())),
                Err(e) => {
                    Err(ApiError::InvalidRequest(format!("malformed JSON at line {} column {}", e.line(), e.column())))
                }
            },
            Kind::Form => {
                let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(text)
                    .map_err(|_| ApiError::InvalidRequest("malformed form body".into()))?;
                // `=value` pairs name no parameter; they cannot be read, so they cannot conflict.
                pairs.retain(|(name, _)| !name.is_empty());
                // RFC 6749 §3.2: request parameters must not be included more than once.
                for (i, (name, _)) in pairs.iter().enumerate() {
                    if pairs[..i].iter().any(|(n, _)| n == name) {
                        return Err(ApiError::InvalidRequest(format!("parameter {name:?} is repeated")));
                    }
                }
                Ok(Self::Form(pairs))
            }
        }
    }

    /// A string field: `Ok(None)` when absent (JSON `null` counts as absent), an error when it is
    /// not a string, empty, or longer than `max_len` bytes.
    pub fn string(&self, name: &str, max_len: usize) -> Result<Option<&str>, ApiError> {
        let value = match self {
            Self::Json(map) => match map.get(name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err(ApiError::InvalidRequest(format!("{name} must be a string"))),
            },
            Self::Form(pairs) => pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
        };
        match value {
            Some("") => Err(ApiError::InvalidRequest(format!("{name} must not be empty"))),
            Some(v) if v.len() > max_len => {
                Err(ApiError::InvalidRequest(format!("{name} is longer than {max_len} bytes")))
            }
            other => Ok(other),
        }
    }

    /// A string field that must be present.
    pub fn required(&self, name: &str, max_len: usize) -> Result<&str, ApiError> {
        self.string(name, max_len)?.ok_or_else(|| ApiError::InvalidRequest(format!("{name} is required")))
    }

    /// Whether the body is a form (RFC 6749 style) rather than JSON.
    pub fn is_form(&self) -> bool {
        matches!(self, Self::Form(_))
    }
}
