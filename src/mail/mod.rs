//! Sending mail without ever holding up an answer: [`Mailer::send`] renders a message and puts it
//! on a bounded queue; a background task delivers it through the configured transport
//! ([`transport`]: ACS Email, SMTP or the `.eml` outbox), trying again after `Retry-After` or an
//! exponential backoff. When the queue is full the mail is dropped and logged; the caller's answer
//! is the same either way.
//!
//! Logs name the mail's kind, its id and the recipient's domain, never the address's local part,
//! a code or a body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::settings::email::{Email, Notices};

pub mod templates;
pub mod transport;

pub use templates::{Message, Notice};
use transport::{Failure, Transport};

/// Deliveries in flight at once per instance (each may be polling an ACS operation).
const PARALLEL_DELIVERIES: usize = 4;
/// The longest wait between tries, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A mail ready to go.
#[derive(Debug, Clone)]
pub struct Mail {
    /// A random id, for logs and for the transport's idempotency (ACS `Operation-Id`).
    pub id: String,
    /// The kind, for logs.
    pub kind: &'static str,
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

impl Mail {
    /// The recipient's domain (what logs show of the address).
    pub fn to_domain(&self) -> &str {
        self.to.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// What became of a mail handed to [`Mailer::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// On the queue.
    Yes,
    /// Dropped: the queue was full (logged).
    Full,
    /// No transport is configured, or this notice is switched off.
    Off,
}

/// Why the mailer could not start.
#[derive(Debug, thiserror::Error)]
#[error("e-mail transport: {0}")]
pub struct StartError(pub String);

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Mail>,
    branding: templates::Branding,
    notices: Notices,
    dropped: AtomicU64,
}

/// The handle services send mail through. Cheap to clone; [`Mailer::off`] sends nothing.
#[derive(Debug, Clone, Default)]
pub struct Mailer {
    inner: Option<Arc<Inner>>,
}

impl Mailer {
    /// A mailer that sends nothing (no transport configured).
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts the delivery task for `settings` (inside a Tokio runtime); [`Mailer::off`] when no
    /// transport is configured.
    pub fn start(settings: &Email) -> Result<Self, StartError> {
        let Some(transport) = Transport::from_settings(settings)? else { return Ok(Self::off()) };
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let policy = RetryPolicy {
            max_attempts: settings.max_attempts.max(1),
            base: Duration::from_millis(settings.retry_base_ms.max(1)),
        };
        tokio::spawn(deliver_all(rx, Arc::new(transport), policy));
        Ok(Self {
            inner: Some(Arc::new(Inner {
                queue: tx,
                branding: templates::Branding {
                    product_name: settings.product_name.clone(),
                    app_url: settings.app_url.clone(),
                    verify_url: settings.verify_url.clone(),
                    reset_url: settings.reset_url.clone(),
                    code_minutes: settings.codes.lifetime_ms / 60_000,
                },
                notices: settings.notices,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    /// Whether mail can be sent at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Mails dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Renders `message` for `username` and queues it for `to`; never waits.
    pub fn send(&self, to: &str, username: &str, message: &Message) -> Queued {
        let Some(inner) = &self.inner else { return Queued::Off };
        let rendered = inner.branding.render(message, username);
        let mail = Mail {
            id: uuid::Uuid::new_v4().to_string(),
            kind: message.kind(),
            to: to.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        let (id, kind) = (mail.id.clone(), mail.kind);
        match inner.queue.try_send(mail) {
            Ok(()) => {
                tracing::debug!(mail = %id, kind, "mail queued");
                Queued::Yes
            }
            Err(mpsc::error::TrySendError::Full(mail)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(mail = %mail.id, kind, domain = mail.to_domain(), "e-mail queue full: mail dropped");
                Queued::Full
            }
            Err(mpsc::error::TrySendError::Closed(mail)) => {
                tracing::error!(mail = %mail.id, kind, "e-mail delivery task has stopped: mail dropped");
                Queued::Full
            }
        }
    }

    /// Sends the security `notice` to `to` (the account's verified address, if any) when its
    /// setting is on.
    pub fn notify(&self, to: Option<&str>, username: &str, notice: Notice) -> Queued {
        let (Some(inner), Some(to)) = (&self.inner, to) else { return Queued::Off };
        let n = inner.notices;
        let on = match notice {
            Notice::PasswordChanged => n.password_changed,
            Notice::NewDevice { .. } => n.new_device,
            Notice::FactorAdded { .. } | Notice::FactorRemoved { .. } | Notice::FactorsReset => n.factor_changed,
            Notice::AccountDisabled => n.account_disabled,
            Notice::EmailChanged => n.email_changed,
        };
        if !on {
            return Queued::Off;
        }
        self.send(to, username, &Message::Notice(notice))
    }
}

/// How often and how long to try a mail again.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    max_attempts: u32,
    base: Duration,
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (1-based `attempt`): the transport's `Retry-After` when
    /// it gave one, else `base` doubled per try, with up to half of it again as jitter.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(MAX_BACKOFF);
        }
        let doubled = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let jitter_ms = u64::try_from(doubled.as_millis() / 2).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(if jitter_ms == 0 { 0 } else { rand::random::<u64>() % jitter_ms });
        doubled.saturating_add(jitter).min(MAX_BACKOFF)
    }
}

/// The delivery task: takes mails off the queue, at most [`PARALLEL_DELIVERIES`] at a time.
async fn deliver_all(mut rx: mpsc::Receiver<Mail>, transport: Arc<Transport>, policy: RetryPolicy) {
    let slots = Arc::new(Semaphore::new(PARALLEL_DELIVERIES));
    loop {
        // A slot first: mails wait on the bounded queue, not in unbounded tasks.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(mail) = rx.recv().await else { return };
        let transport = transport.clone();
        tokio::spawn(async move {
            deliver(&transport, &mail, policy).await;
            drop(slot);
        });
    }
}

/// Delivers one mail, trying again as the policy allows; logs the outcome.
async fn deliver(transport: &Transport, mail: &Mail, policy: RetryPolicy) {
    for attempt in 1..=policy.max_attempts {
        match transport.deliver(mail).await {
            Ok(()) => {
                tracing::info!(mail = %mail.id, kind = mail.kind, domain = mail.to_domain(), attempt, "mail sent");
                return;
            }
            Err(Failure::Permanent(why)) => {
                tracing::error!(mail = %mail.id, kind = mail.kind, domain = mail.to_domain(), attempt, error = %why, "mail not sent");
                return;
            }
            Err(Failure::Transient { why, retry_after }) => {
                if attempt == policy.max_attempts {
                    tracing::error!(
                        mail = %mail.id, kind = mail.kind, domain = mail.to_domain(), attempt, error = %why,
                        "mail not sent: every try failed"
                    );
                    return;
                }
                let wait = policy.wait(attempt, retry_after);
                tracing::warn!(
                    mail = %mail.id, kind = mail.kind, attempt, error = %why, wait_ms = wait.as_millis() as u64,
                    "mail send failed; trying again"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_a_cap() {
        let p = RetryPolicy { max_attempts: 5, base: Duration::from_millis(100) };
        for attempt in 1..=4u32 {
            let w = p.wait(attempt, None);
            let floor = Duration::from_millis(100 << (attempt - 1));
            assert!(w >= floor && w < floor + floor / 2 + Duration::from_millis(1), "{attempt}: {w:?}");
        }
        assert_eq!(p.wait(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(p.wait(1, Some(Duration::from_secs(9_999))), MAX_BACKOFF);
        assert!(p.wait(60, None) <= MAX_BACKOFF);
    }
}
