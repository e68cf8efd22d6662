//! Request bodies: JSON objects or RFC 6749 form bodies, read into one field view with typed,
//! checked accessors, so every handler reports bad input the same way.

use std::collections::HashSet;

use super::ApiRequest;
use super::error::ApiError;

/// Most parameters (form pairs, or JSON object keys) a body may hold; no request needs more.
pub const MAX_PARAMETERS: usize = 64;

/// A JSON value like `serde_json::Value`, except that an object with a repeated key, or with
/// more than [`MAX_PARAMETERS`] keys, fails to parse: no parser in front of us can then read a
/// different value than we do.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor { max_keys: MAX_PARAMETERS }).map(Strict)
    }
}

/// A whole JSON document (an invocation payload, which wraps the client's body) in which no object
/// repeats a key, however many keys it has.
pub(crate) fn without_repeats(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut d = serde_json::Deserializer::from_slice(bytes);
    let value = Seed { max_keys: usize::MAX }.deserialize(&mut d)?;
    d.end()?;
    Ok(value)
}

/// Reads one value with the same rules as its parent.
#[derive(Clone, Copy)]
struct Seed {
    max_keys: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrictVisitor { max_keys: self.max_keys })
    }
}

struct StrictVisitor {
    max_keys: usize,
}

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed { max_keys: self.max_keys })? {
            if items.len() >= MAX_PARAMETERS {
                return Err(serde::de::Error::custom(format!("an array holds more than {MAX_PARAMETERS} items")));
            }
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.len() >= self.max_keys {
                return Err(serde::de::Error::custom(format!("an object holds more than {} keys", self.max_keys)));
            }
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("key {key:?} is repeated")));
            }
            let value = map.next_value_seed(Seed { max_keys: self.max_keys })?;
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

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
    /// Like [`Fields::parse`], but an empty body is `None` (refresh and revoke then read the
    /// refresh-token cookie).
    pub fn parse_optional(req: &ApiRequest) -> Result<Option<Self>, ApiError> {
        if req.body.is_empty() && !req.body_too_large { Ok(None) } else { Self::parse(req).map(Some) }
    }

    /// Whether the body holds no field at all (`{}`).
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Json(map) => map.is_empty(),
            Self::Form(pairs) => pairs.is_empty(),
        }
    }

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
            Kind::Json => match serde_json::from_str::<Strict>(text) {
                Ok(Strict(serde_json::Value::Object(map))) => Ok(Self::Json(map)),
                Ok(_) => Err(ApiError::InvalidRequest("the JSON body must be an object".into())),
                Err(e) if e.is_data() => Err(ApiError::InvalidRequest(format!("invalid JSON body: {e}"))),
                Err(e) => {
                    Err(ApiError::InvalidRequest(format!("malformed JSON at line {} column {}", e.line(), e.column())))
                }
            },
            Kind::Form => {
                let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(text)
                    .map_err(|_| ApiError::InvalidRequest("malformed form body".into()))?;
                // `=value` pairs name no parameter; they cannot be read, so they cannot conflict.
                pairs.retain(|(name, _)| !name.is_empty());
                if pairs.len() > MAX_PARAMETERS {
                    return Err(ApiError::InvalidRequest(format!("at most {MAX_PARAMETERS} parameters are accepted")));
                }
                // RFC 6749 §3.2: request parameters must not be included more than once.
                let mut seen = HashSet::with_capacity(pairs.len());
                if let Some((name, _)) = pairs.iter().find(|(name, _)| !seen.insert(name.as_str())) {
                    return Err(ApiError::InvalidRequest(format!("parameter {name:?} is repeated")));
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

    /// A JSON field's value (forms have none but strings: a form value is a JSON string here).
    pub fn value(&self, name: &str) -> Option<&serde_json::Value> {
        match self {
            Self::Json(map) => map.get(name),
            Self::Form(_) => None,
        }
    }

    /// The names of the fields.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Self::Json(map) => Box::new(map.keys().map(String::as_str)),
            Self::Form(pairs) => Box::new(pairs.iter().map(|(n, _)| n.as_str())),
        }
    }

    /// Whether the body is a form (RFC 6749 style) rather than JSON.
    pub fn is_form(&self) -> bool {
        matches!(self, Self::Form(_))
    }
}
