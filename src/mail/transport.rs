//! The ways mail leaves the service.
//!
//! - **ACS Email** (`acs`): `POST {endpoint}/emails:send?api-version=…` with a Microsoft Entra token
//!   of the app's managed identity (scope `https://communication.azure.com//.default`, as every
//!   Azure SDK asks for it), then the long-running operation named by `Operation-Location` is
//!   polled until it ends. The mail's id is the `Operation-Id`, the same on every try, so a try
//!   whose answer was lost is the same operation to ACS. 429 and 5xx are tried again after
//!   `Retry-After`.
//! - **SMTP** (`smtp`): lettre's client, STARTTLS or implicit TLS (rustls).
//! - **Outbox** (`outbox`): each message as an RFC 5322 `.eml` file, written to a temporary name and
//!   renamed, so a reader never sees half a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncTransport as _, Tokio1Executor};

use super::{Mail, StartError};
use crate::settings::email::{Email, SmtpSecurity, Transport as Setting};

/// The scope of ACS data-plane tokens (the resource `https://communication.azure.com/` and
/// `/.default`; the Azure SDKs for .NET, Python, JS and Java all ask for it in this form).
pub const ACS_SCOPE: &str = "https://communication.azure.com//.default";
/// Longest answer body read from ACS.
const MAX_ANSWER: usize = 64 * 1024;
/// Most status polls of one ACS operation.
const MAX_POLLS: u32 = 60;
/// The poll interval when ACS gives none.
const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Why a try failed.
#[derive(Debug)]
pub enum Failure {
    /// Trying again may work (throttled, unavailable, timed out); after `retry_after` when known.
    Transient {
        /// What happened.
        why: String,
        /// The transport's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Trying again will not help (refused address, no permission).
    Permanent(String),
}

fn transient(why: impl Into<String>) -> Failure {
    Failure::Transient { why: why.into(), retry_after: None }
}

/// A configured transport.
pub enum Transport {
    /// ACS Email.
    Acs(Acs),
    /// SMTP.
    Smtp {
        /// lettre's client (a connection per mail).
        client: lettre::AsyncSmtpTransport<Tokio1Executor>,
        /// The sender.
        from: Mailbox,
    },
    /// `.eml` files.
    Outbox {
        /// The directory.
        dir: PathBuf,
        /// The sender.
        from: Mailbox,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Acs(a) => a.fmt(f),
            Self::Smtp { .. } => f.write_str("Smtp"),
            Self::Outbox { dir, .. } => f.debug_struct("Outbox").field("dir", dir).finish(),
        }
    }
}

/// The ACS Email client.
pub struct Acs {
    endpoint: String,
    api_version: String,
    sender: String,
    credential: Arc<dyn azure_core::credentials::TokenCredential>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Acs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acs").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Transport {
    /// The transport `settings` name; `None` for `none`.
    pub fn from_settings(settings: &Email) -> Result<Option<Self>, StartError> {
        let sender = || -> Result<Mailbox, StartError> {
            let address = settings.from.parse().map_err(|e| StartError(format!("sender address: {e}")))?;
            Ok(Mailbox::new(Some(settings.product_name.clone()).filter(|n| !n.is_empty()), address))
        };
        let timeout = Duration::from_millis(settings.send_timeout_ms);
        match &settings.transport {
            Setting::None => Ok(None),
            Setting::Outbox { path } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| StartError(format!("cannot make the outbox {}: {e}", path.display())))?;
                Ok(Some(Self::Outbox { dir: path.clone(), from: sender()? }))
            }
            Setting::Smtp { host, port, security, credentials } => {
                let builder = match security {
                    SmtpSecurity::StartTls => lettre::AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
                    SmtpSecurity::Tls => lettre::AsyncSmtpTransport::<Tokio1Executor>::relay(host),
                    SmtpSecurity::None => Ok(lettre::AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
                }
                .map_err(|e| StartError(format!("SMTP relay {host}: {e}")))?;
                let mut builder = builder.port(*port).timeout(Some(timeout));
                if let Some((user, password)) = credentials {
                    let password = String::from_utf8_lossy(password.expose()).into_owned();
                    builder = builder
                        .credentials(lettre::transport::smtp::authentication::Credentials::new(user.clone(), password));
                }
                Ok(Some(Self::Smtp { client: builder.build(), from: sender()? }))
            }
            Setting::Acs { endpoint, api_version, client_id, identity, .. } => {
                let credential = identity
                    .credential(client_id.as_deref())
                    .map_err(|e| StartError(format!("managed identity for ACS: {e}")))?;
                let http = reqwest::Client::builder()
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| StartError(format!("HTTP client: {e}")))?;
                Ok(Some(Self::Acs(Acs {
                    endpoint: endpoint.clone(),
                    api_version: api_version.clone(),
                    sender: settings.from.clone(),
                    credential,
                    http,
                })))
            }
        }
    }

    /// One try at delivering `mail`.
    pub async fn deliver(&self, mail: &Mail) -> Result<(), Failure> {
        match self {
            Self::Acs(acs) => acs.send(mail).await,
            Self::Smtp { client, from } => {
                let message = rfc5322(mail, from)?;
                match client.send(message).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => Err(Failure::Permanent(format!("SMTP: {e}"))),
                    Err(e) => Err(transient(format!("SMTP: {e}"))),
                }
            }
            Self::Outbox { dir, from } => {
                let bytes = rfc5322(mail, from)?.formatted();
                write_eml(dir, &mail.id, &bytes).await.map_err(|e| transient(format!("outbox {}: {e}", dir.display())))
            }
        }
    }
}

/// The mail as an RFC 5322 message: multipart/alternative, the text part quoted-printable (so a
/// `Code: …` line stays a line of its own, readable as it is), then the HTML part.
pub fn rfc5322(mail: &Mail, from: &Mailbox) -> Result<lettre::Message, Failure> {
    let to: Mailbox = mail.to.parse().map_err(|e| Failure::Permanent(format!("recipient address: {e}")))?;
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .header(ContentTransferEncoding::QuotedPrintable)
        .body(mail.text.clone());
    let html = SinglePart::builder()
        .header(ContentType::TEXT_HTML)
        .header(ContentTransferEncoding::QuotedPrintable)
        .body(mail.html.clone());
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}@jwt-refresh-token>", mail.id)))
        .multipart(MultiPart::alternative().singlepart(text).singlepart(html))
        .map_err(|e| Failure::Permanent(format!("message: {e}")))
}

/// Writes `bytes` as `<dir>/<id>.eml`, atomically (a temporary name, then rename).
async fn write_eml(dir: &std::path::Path, id: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{id}.tmp"));
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, dir.join(format!("{id}.eml"))).await
}

/// `Retry-After` in seconds (the only form ACS sends), at most an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3_600)))
}

/// At most [`MAX_ANSWER`] bytes of an answer's body.
async fn body_of(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            body.truncate(MAX_ANSWER);
            break;
        }
    }
    body
}

/// The `error.code` of an ACS error body (never the message text, which may echo the address).
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_string))
        .unwrap_or_else(|| "no error code".into())
}

/// What a status code says about trying again.
fn failure_of(what: &str, status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Failure {
    let why = format!("{what} answered {status} ({})", error_code(body));
    match status.as_u16() {
        408 | 429 | 500..=599 => Failure::Transient { why, retry_after: retry_after(headers) },
        // A role assignment takes minutes to apply after a deployment: tried again, within the
        // tries allowed.
        401 | 403 => Failure::Transient {
            why: format!(
                "{why}: the managed identity may not send mail (yet); it needs the Communication and Email \
                 Service Owner role on the resource, or one with Microsoft.Communication/CommunicationServices/Read \
                 and …/EmailServices/write (infra/modules/email.bicep assigns it)"
            ),
            retry_after: retry_after(headers),
        },
        _ => Failure::Permanent(why),
    }
}

impl Acs {
    async fn token(&self) -> Result<String, Failure> {
        let token = self
            .credential
            .get_token(&[ACS_SCOPE], None)
            .await
            .map_err(|e| transient(format!("managed identity token: {e}")))?;
        Ok(token.token.secret().to_string())
    }

    async fn send(&self, mail: &Mail) -> Result<(), Failure> {
        let token = self.token().await?;
        let url = format!("{}/emails:send?api-version={}", self.endpoint, self.api_version);
        let body = serde_json::json!({
            "senderAddress": self.sender,
            "recipients": { "to": [ { "address": mail.to } ] },
            "content": { "subject": mail.subject, "plainText": mail.text, "html": mail.html },
            "userEngagementTrackingDisabled": true,
        });
        let response = self
            .http
            .post(&url)
            .bearer_auth(&token)
            .header("Operation-Id", &mail.id)
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| transient(format!("ACS send: {}", without_url(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status != reqwest::StatusCode::ACCEPTED {
            let body = body_of(response).await;
            return Err(failure_of("ACS send", status, &headers, &body));
        }
        let location =
            headers.get("operation-location").and_then(|l| l.to_str().ok()).map(str::to_string).unwrap_or_else(|| {
                format!("{}/emails/operations/{}?api-version={}", self.endpoint, mail.id, self.api_version)
            });
        if !location.starts_with(&self.endpoint) {
            // Only the configured endpoint gets the token.
            return Err(Failure::Permanent("ACS named an operation outside its endpoint".into()));
        }
        self.follow(mail, &location, retry_after(&headers)).await
    }

    /// Polls the operation at `location` until it ends (at most [`MAX_POLLS`] times).
    async fn follow(&self, mail: &Mail, location: &str, first_wait: Option<Duration>) -> Result<(), Failure> {
        let mut wait = first_wait.unwrap_or(DEFAULT_POLL);
        for _ in 0..MAX_POLLS {
            tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
            let token = self.token().await?;
            let response = match self.http.get(location).bearer_auth(&token).send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(mail = %mail.id, error = %without_url(&e), "ACS status poll failed; polling again");
                    wait = DEFAULT_POLL;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = body_of(response).await;
            if !status.is_success() {
                match failure_of("ACS status", status, &headers, &body) {
                    Failure::Transient { retry_after, .. } => {
                        wait = retry_after.unwrap_or(DEFAULT_POLL);
                        continue;
                    }
                    permanent => return Err(permanent),
                }
            }
            let state: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match state.get("status").and_then(|s| s.as_str()).unwrap_or("") {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    let code = state.pointer("/error/code").and_then(|c| c.as_str()).unwrap_or("no error code");
                    return Err(Failure::Permanent(format!("ACS operation ended without sending ({code})")));
                }
                _ => wait = retry_after(&headers).unwrap_or(DEFAULT_POLL),
            }
        }
        // Sending again could deliver twice: log and stop following.
        tracing::warn!(mail = %mail.id, "ACS operation still running after {MAX_POLLS} polls; no longer followed");
        Ok(())
    }
}

/// A reqwest error without its URL (which holds nothing secret here, but is long).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "…");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_keeps_the_code_line_readable_and_both_parts() {
        let mail = Mail {
            id: "m1".into(),
            kind: "verify-address",
            to: "eve@example.com".into(),
            subject: "Acme: confirm".into(),
            text: "Hello eve,\n\nCode: 123456\n\nIt is valid for 15 minutes.".into(),
            html: "<p>Code: <strong>123456</strong></p>".into(),
        };
        let from: Mailbox = "Acme <no-reply@example.com>".parse().unwrap();
        let raw = String::from_utf8(rfc5322(&mail, &from).unwrap().formatted()).unwrap();
        assert!(raw.lines().any(|l| l == "Code: 123456"), "{raw}");
        assert!(raw.contains("multipart/alternative") && raw.contains("text/html"));
        assert!(raw.contains("Message-ID: <m1@jwt-refresh-token>"));
        let bad = Mail { to: "not an address".into(), ..mail };
        assert!(matches!(rfc5322(&bad, &from), Err(Failure::Permanent(_))));
    }

    #[test]
    fn throttling_and_outages_are_tried_again_and_refusals_are_not() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        let f = failure_of("ACS send", reqwest::StatusCode::TOO_MANY_REQUESTS, &headers, b"{}");
        assert!(matches!(f, Failure::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        let f = failure_of("ACS send", reqwest::StatusCode::SERVICE_UNAVAILABLE, &Default::default(), b"");
        assert!(matches!(f, Failure::Transient { retry_after: None, .. }));
        let body = br#"{"error":{"code":"InvalidSenderDomain","message":"eve@example.com"}}"#;
        match failure_of("ACS send", reqwest::StatusCode::BAD_REQUEST, &Default::default(), body) {
            Failure::Permanent(why) => assert!(why.contains("InvalidSenderDomain") && !why.contains("eve@")),
            other => panic!("{other:?}"),
        }
    }
}
