//! The mails' texts: a plain-text part and an HTML part of each, with the product's name and
//! links from the settings. Every value that comes from a user or a client (user names, user
//! agents, addresses) is escaped in the HTML part and stripped of control characters in both.
//!
//! A mail that carries a code puts it on a line of its own in the plain-text part, `Code: 123456`,
//! so that people and scripts find it.

use crate::clock::UnixMs;

/// What a mail is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A code proving the address.
    VerifyAddress {
        /// The code.
        code: String,
    },
    /// A code to set a new password.
    ResetPassword {
        /// The code.
        code: String,
    },
    /// A security notice.
    Notice(Notice),
}

/// The security notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The password was changed, set or reset.
    PasswordChanged,
    /// A password login from a device that held no device token of the user.
    NewDevice {
        /// When.
        at_ms: UnixMs,
        /// The client's `User-Agent`.
        user_agent: Option<String>,
        /// The client's address.
        address: Option<String>,
    },
    /// A second factor was added (`what`: "an authenticator app", "the passkey …").
    FactorAdded {
        /// What was added.
        what: String,
    },
    /// A second factor was removed.
    FactorRemoved {
        /// What was removed.
        what: String,
    },
    /// An admin removed every second factor.
    FactorsReset,
    /// The account was disabled.
    AccountDisabled,
    /// The account's address was changed (sent to the old address).
    EmailChanged,
}

impl Message {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VerifyAddress { .. } => "verify-address",
            Self::ResetPassword { .. } => "reset-password",
            Self::Notice(n) => n.kind(),
        }
    }
}

impl Notice {
    /// A short name for logs and settings.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PasswordChanged => "password-changed",
            Self::NewDevice { .. } => "new-device",
            Self::FactorAdded { .. } => "factor-added",
            Self::FactorRemoved { .. } => "factor-removed",
            Self::FactorsReset => "factors-reset",
            Self::AccountDisabled => "account-disabled",
            Self::EmailChanged => "email-changed",
        }
    }
}

/// The settings the texts take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    /// The product's name.
    pub product_name: String,
    /// The app's address, at the foot.
    pub app_url: Option<String>,
    /// The page for verification codes.
    pub verify_url: Option<String>,
    /// The page for reset codes.
    pub reset_url: Option<String>,
    /// How long codes are valid, in minutes.
    pub code_minutes: i64,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Escapes `text` for HTML element content and double-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` without control characters (no header or line injection through a user agent), at most
/// `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `url` with the code in the fragment (never sent to a server by a browser).
fn code_link(url: &str, code: &str) -> String {
    let base = url.split('#').next().unwrap_or(url);
    format!("{base}#code={code}")
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time in milliseconds.
pub fn utc_minute(at_ms: UnixMs) -> String {
    let secs = at_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

/// One paragraph of the body: text in both parts.
struct Body {
    text: Vec<String>,
    html: Vec<String>,
}

impl Body {
    fn new() -> Self {
        Self { text: Vec::new(), html: Vec::new() }
    }

    /// A paragraph of plain words (escaped for HTML).
    fn para(&mut self, words: &str) {
        self.text.push(words.to_string());
        self.html.push(format!("<p>{}</p>", escape_html(words)));
    }

    /// The code, on a line of its own.
    fn code(&mut self, code: &str) {
        self.text.push(format!("Code: {code}"));
        self.html.push(format!(
            "<p style=\"font-size:1.5em;letter-spacing:0.2em\">Code: <strong>{}</strong></p>",
            escape_html(code)
        ));
    }

    /// A link with its label.
    fn link(&mut self, label: &str, url: &str) {
        self.text.push(format!("{label}: {url}"));
        self.html.push(format!("<p><a href=\"{}\">{}</a></p>", escape_html(url), escape_html(label)));
    }
}

impl Branding {
    /// Renders `message` for the user `username`.
    pub fn render(&self, message: &Message, username: &str) -> Rendered {
        let product = clean(&self.product_name, 64);
        let name = clean(username, 128);
        let minutes = self.code_minutes;
        let mut body = Body::new();
        body.para(&format!("Hello {name},"));
        let subject = match message {
            Message::VerifyAddress { code } => {
                body.para(&format!("Use this code to confirm that this address belongs to your {product} account:"));
                body.code(code);
                body.para(&format!("It is valid for {minutes} minutes and can be used once."));
                if let Some(url) = &self.verify_url {
                    body.link("Or open", &code_link(url, code));
                }
                body.para("If you did not ask for it, ignore this mail: nothing changes without the code.");
                format!("{product}: confirm your e-mail address")
            }
            Message::ResetPassword { code } => {
                body.para(&format!("Someone asked to set a new password for your {product} account. Your code:"));
                body.code(code);
                body.para(&format!(
                    "It is valid for {minutes} minutes and can be used once. Setting a new password signs you out everywhere."
                ));
                if let Some(url) = &self.reset_url {
                    body.link("Or open", &code_link(url, code));
                }
                body.para("If it was not you, ignore this mail: your password stays as it is.");
                format!("{product}: your password reset code")
            }
            Message::Notice(notice) => {
                let subject = self.notice(notice, &product, &mut body);
                body.para(&format!(
                    "If this was not you, change your password now and review your devices, or contact {product}'s support."
                ));
                subject
            }
        };
        if let Some(url) = &self.app_url {
            body.link(&product, url);
        }
        let text = format!("{}\n\n-- \n{product}\n", body.text.join("\n\n"));
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\
             <body style=\"font-family:sans-serif\">\n{}\n<hr><p>{}</p></body></html>\n",
            escape_html(&subject),
            body.html.join("\n"),
            escape_html(&product)
        );
        Rendered { subject, text, html }
    }

    fn notice(&self, notice: &Notice, product: &str, body: &mut Body) -> String {
        match notice {
            Notice::PasswordChanged => {
                body.para(&format!("The password of your {product} account was changed."));
                format!("{product}: your password was changed")
            }
            Notice::NewDevice { at_ms, user_agent, address } => {
                body.para(&format!("Your {product} account was signed in to from a new device."));
                let mut details = vec![format!("When: {}", utc_minute(*at_ms))];
                if let Some(agent) = user_agent {
                    details.push(format!("Device: {}", clean(agent, 200)));
                }
                if let Some(address) = address {
                    details.push(format!("Network address: {}", clean(address, 64)));
                }
                body.para(&details.join("\n"));
                format!("{product}: new sign-in to your account")
            }
            Notice::FactorAdded { what } => {
                body.para(&format!("{} was added to your {product} account as a way to sign in.", clean(what, 120)));
                format!("{product}: a sign-in method was added")
            }
            Notice::FactorRemoved { what } => {
                body.para(&format!("{} was removed from your {product} account.", clean(what, 120)));
                format!("{product}: a sign-in method was removed")
            }
            Notice::FactorsReset => {
                body.para(&format!(
                    "An administrator removed the second factors (authenticator app, passkeys, recovery codes) of your \
                     {product} account, and every session ended."
                ));
                format!("{product}: your second factors were removed")
            }
            Notice::AccountDisabled => {
                body.para(&format!("Your {product} account was disabled: it can no longer sign in."));
                format!("{product}: your account was disabled")
            }
            Notice::EmailChanged => {
                body.para(&format!(
                    "The e-mail address of your {product} account was changed: mail for it no longer comes to this address."
                ));
                format!("{product}: your e-mail address was changed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branding() -> Branding {
        Branding {
            product_name: "Acme <Shop>".into(),
            app_url: Some("https://app.example.com".into()),
            verify_url: Some("https://app.example.com/verify".into()),
            reset_url: None,
            code_minutes: 15,
        }
    }

    #[test]
    fn codes_stand_on_a_line_of_their_own_and_user_text_is_escaped() {
        let r = branding().render(&Message::VerifyAddress { code: "123456".into() }, "<b>eve</b>\r\nBcc: x");
        assert!(r.text.lines().any(|l| l == "Code: 123456"), "{}", r.text);
        assert!(r.text.contains("https://app.example.com/verify#code=123456"));
        assert!(!r.html.contains("<b>eve"), "{}", r.html);
        assert!(r.html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(r.html.contains("Acme &lt;Shop&gt;"));
        assert!(!r.text.contains('\r') && !r.subject.contains('\n'));
        let agent = Notice::NewDevice { at_ms: 0, user_agent: Some("<script>x</script>\nEvil".into()), address: None };
        let r = branding().render(&Message::Notice(agent), "eve");
        assert!(r.html.contains("&lt;script&gt;") && !r.html.contains("<script>"));
        assert!(r.text.contains("1970-01-01 00:00 UTC"));
        assert!(r.text.contains("Device: <script>x</script>Evil"));
    }

    #[test]
    fn every_notice_has_its_own_subject() {
        let notices = [
            Notice::PasswordChanged,
            Notice::NewDevice { at_ms: 1_765_000_000_000, user_agent: None, address: Some("203.0.113.9".into()) },
            Notice::FactorAdded { what: "An authenticator app".into() },
            Notice::FactorRemoved { what: "The passkey \"laptop\"".into() },
            Notice::FactorsReset,
            Notice::AccountDisabled,
            Notice::EmailChanged,
        ];
        let subjects: std::collections::HashSet<String> =
            notices.iter().map(|n| branding().render(&Message::Notice(n.clone()), "eve").subject).collect();
        assert_eq!(subjects.len(), notices.len());
        assert_eq!(utc_minute(1_765_000_000_000), "2025-12-06 05:46 UTC");
    }
}
