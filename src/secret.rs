//! Values that must never reach a log: their `Debug` output is redacted.

use std::fmt;

/// A password as received from a client or the CLI. `Debug` prints `Password(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The password's text, for hashing and verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Key material from configuration (a signing key, a rotation secret). `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps key material.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(value.into())
    }

    /// The key bytes, for cryptographic use only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, ***)", self.0.len())
    }
}

/// Shows at most the first 6 characters of a token, for diagnostics.
pub(crate) fn token_prefix(token: &str) -> String {
    let prefix: String = token.chars().take(6).collect();
    format!("{prefix}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_secret() {
        let p = Password::new("correct horse battery staple");
        assert_eq!(format!("{p:?}"), "Password(***)");
        let s = SecretBytes::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("0123"), "{shown}");
        assert!(shown.contains("32 bytes"));
    }

    #[test]
    fn token_prefix_keeps_six_characters() {
        assert_eq!(token_prefix("abcdefghijkl"), "abcdef…");
        assert_eq!(token_prefix("abc"), "abc…");
    }
}
