//! The username and password rules for new accounts.
//!
//! **Usernames** follow RFC 8265's UsernameCaseMapped profile: full-width and half-width characters
//! are mapped to their ordinary forms, letters are case-folded (lowercased) and the result is NFC.
//! The mapped form is the lookup key, so `Ａｌｉｃｅ`, `ALICE` and `alice` are one account. New
//! usernames must also be in a single script (Latin with Cyrillic look-alikes such as `аdmin` is
//! refused), contain no control, format or whitespace characters other than inner spaces, and be 1
//! to 64 characters. Accounts created before this profile keep working: their keys were the
//! lowercased name, which lookups also try when the mapped key differs.
//!
//! **Passwords** must be at least `Password__MinLength` characters (default 8), at most 1024
//! bytes, without line breaks, and score at least [`MIN_PASSWORD_SCORE`] (of 4) with zxcvbn — an
//! estimator of guessing effort that knows common passwords, dictionary words, names, keyboard
//! patterns, dates and the username itself.

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::MixedScript as _;

use super::{MAX_PASSWORD_BYTES, UsernameError};

/// Least zxcvbn score (0–4) a new password must reach: 3 is "safely unguessable: moderate
/// protection from offline slow-hash scenarios" (about 10^8 guesses and more).
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// Maps a full-width or half-width character to its ordinary form (RFC 8265 §3.3.1 width mapping:
/// the compatibility decomposition of characters whose decomposition type is `<wide>` or
/// `<narrow>`, which lie in the Halfwidth and Fullwidth Forms block).
fn width_mapped(raw: &str) -> String {
    raw.chars()
        .flat_map(|c| {
            let mapped: Vec<char> =
                if ('\u{FF00}'..='\u{FFEF}').contains(&c) { c.to_string().nfkc().collect() } else { vec![c] };
            mapped
        })
        .collect()
}

/// The lookup key of a username under the profile (width-mapped, case-folded, NFC).
pub fn mapped_key(raw: &str) -> String {
    width_mapped(raw).to_lowercase().nfc().collect()
}

/// The key accounts had before the profile: the name lowercased.
pub fn legacy_key(raw: &str) -> String {
    raw.to_lowercase()
}

/// Checks a username for a new account (stricter than lookups, which accept any name that could
/// have been registered before).
///
/// Each space-separated part must pass RFC 8265's UsernameCaseMapped profile as `precis-profiles`
/// enforces it (§3.5 lets an application accept "userparts" separated by spaces): that refuses
/// compatibility characters (`𝐚`, `ⓐ`, `ǅ`, the Hangul filler), default ignorables and symbols.
/// The whole name must be in one script, and a name in another script whose every letter looks
/// Latin (all-Cyrillic `аӏісе`) is refused as a whole-script confusable (UTS #39).
pub fn check_new_username(raw: &str) -> Result<String, UsernameError> {
    use precis_core::profile::Profile as _;
    let key = super::username_key(raw)?;
    let mapped: String = width_mapped(raw).nfc().collect();
    if mapped.chars().any(|c| c.is_control() || is_format(c) || (c.is_whitespace() && c != ' ')) {
        return Err(UsernameError::BadCharacters);
    }
    let profile = precis_profiles::UsernameCaseMapped::new();
    if mapped.split(' ').any(|part| part.is_empty() || profile.enforce(part).is_err()) {
        return Err(if mapped.contains("  ") { UsernameError::BadCharacters } else { UsernameError::NotInProfile });
    }
    if !mapped.is_single_script() {
        return Err(UsernameError::MixedScript);
    }
    if !mapped.is_ascii() && skeleton_key(&mapped).is_ascii() && skeleton_key(&mapped) != key {
        return Err(UsernameError::WholeScriptConfusable);
    }
    Ok(key)
}

/// The UTS #39 confusable skeleton of a name, as a lookup key: two names with one skeleton look
/// alike (`paypal` and `pаypаl` with Cyrillic а).
pub fn skeleton_key(raw: &str) -> String {
    mapped_key(&unicode_security::skeleton(&mapped_key(raw)).collect::<String>())
}

/// Unicode format characters (zero-width joiners, bidi controls, …), which make look-alike names.
fn is_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// Why a new password was refused; `Display` says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Too short.
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    /// Too long.
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// Line breaks.
    #[error("password must not contain line breaks")]
    LineBreak,
    /// Too easy to guess.
    #[error("password is too easy to guess{0}")]
    Weak(String),
}

/// Checks a new password for `username` against the policy.
pub fn check_new_password(password: &str, username: &str, min_chars: usize) -> Result<(), PasswordPolicyError> {
    if password.chars().count() < min_chars {
        return Err(PasswordPolicyError::TooShort(min_chars));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordPolicyError::TooLong);
    }
    if password.contains(['\n', '\r']) {
        return Err(PasswordPolicyError::LineBreak);
    }
    let estimate = zxcvbn::zxcvbn(password, &[username, &mapped_key(username)]);
    if u8::from(estimate.score()) < MIN_PASSWORD_SCORE {
        let advice = estimate
            .feedback()
            .map(|f| {
                let mut parts: Vec<String> = f.warning().map(|w| w.to_string()).into_iter().collect();
                parts.extend(f.suggestions().iter().map(ToString::to_string));
                parts
            })
            .unwrap_or_default();
        let advice = if advice.is_empty() {
            ": use a longer passphrase of several uncommon words".to_string()
        } else {
            format!(": {}", advice.join(" "))
        };
        return Err(PasswordPolicyError::Weak(advice));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_width_mapped_case_folded_and_nfc() {
        assert_eq!(mapped_key("Ａｌｉｃｅ"), "alice");
        assert_eq!(mapped_key("ALICE"), "alice");
        assert_eq!(mapped_key("E\u{301}mile"), "émile");
        assert_eq!(check_new_username("Émile").unwrap(), "émile");
        assert_eq!(legacy_key("Ａｌｉｃｅ"), "ａｌｉｃｅ");
    }

    #[test]
    fn confusable_and_invisible_names_are_refused() {
        assert_eq!(check_new_username("\u{430}dmin"), Err(UsernameError::MixedScript), "Cyrillic а with Latin");
        assert_eq!(check_new_username("ad\u{200B}min"), Err(UsernameError::BadCharacters));
        assert_eq!(check_new_username("ad\u{202E}min"), Err(UsernameError::BadCharacters));
        assert_eq!(check_new_username("tab\tname"), Err(UsernameError::BadCharacters));
        assert!(check_new_username("jean pierre").is_ok());
        assert!(check_new_username("мария").is_ok(), "one script is fine");
        assert!(check_new_username("bob_42.dev").is_ok());
    }

    #[test]
    fn rfc_8265_refuses_compatibility_and_invisible_characters() {
        for (name, why) in [
            ("\u{1D41A}lice", "mathematical bold a"),
            ("\u{24D0}lice", "circled a"),
            ("\u{01C5}emal", "titlecase digraph dž"),
            ("\u{3164}", "Hangul filler alone"),
            ("a\u{3164}b", "Hangul filler inside"),
            ("bob\u{2665}", "a symbol"),
            ("\u{FFA0}x", "half-width Hangul filler"),
        ] {
            assert!(check_new_username(name).is_err(), "{why}: {name:?} is refused");
        }
    }

    #[test]
    fn whole_script_confusables_are_refused_and_ordinary_names_of_every_script_pass() {
        assert_eq!(
            check_new_username("\u{430}\u{4CF}\u{456}\u{441}\u{435}"),
            Err(UsernameError::WholeScriptConfusable)
        );
        for name in ["müller", "张伟", "иван", "o'brien-2", "Ｊｏｈｎ", "jean pierre", "محمد", "δημήτρης", "山田"]
        {
            assert!(check_new_username(name).is_ok(), "{name} registers: {:?}", check_new_username(name));
        }
        assert_eq!(skeleton_key("p\u{430}yp\u{430}l"), skeleton_key("paypal"));
        assert_eq!(check_new_username("a  b"), Err(UsernameError::BadCharacters), "two spaces in a row");
    }

    #[test]
    fn weak_and_common_passwords_are_refused_with_advice() {
        assert_eq!(check_new_password("short", "bob", 8), Err(PasswordPolicyError::TooShort(8)));
        for weak in ["password", "password123", "qwertyuiop", "12345678", "bobbobbob1", "iloveyou2"] {
            let e = check_new_password(weak, "bob", 8).unwrap_err();
            assert!(matches!(e, PasswordPolicyError::Weak(_)), "{weak}: {e}");
            assert!(e.to_string().starts_with("password is too easy to guess: "), "{e}");
        }
        assert!(check_new_password("correct horse battery staple", "bob", 8).is_ok());
        assert!(check_new_password("vT9#qL2!mZ", "bob", 8).is_ok());
        assert_eq!(check_new_password("a\nb-long-enough-x", "bob", 8), Err(PasswordPolicyError::LineBreak));
    }
}
