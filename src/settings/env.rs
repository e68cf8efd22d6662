//! The environment source: a snapshot of app settings, keyed case-insensitively with `:` read as
//! `__`, and typed number parsing that names the setting on failure.

use std::collections::HashMap;
use std::fmt;

use super::SettingsError;

/// A snapshot of configuration values, keyed case-insensitively with `:` read as `__`.
#[derive(Clone, Default)]
pub struct Env {
    values: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values can be keys and secrets: show names only.
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Values from name/value pairs (tests, `local.settings.json`).
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let values = pairs.into_iter().map(|(k, v)| (normalize(k.as_ref()), v.into())).collect();
        Self { values }
    }

    /// The value of `name`, if set to something other than blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&normalize(name)).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// Sets a value (used to fill development defaults).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(normalize(name), value.into());
    }

    pub(crate) fn parse_int<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &self,
        name: &str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingsError> {
        let Some(raw) = self.get(name) else { return Ok(default) };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| SettingsError::new(name, format!("must be a whole number, got {:?}", shorten(raw))))?;
        if value < min || value > max {
            return Err(SettingsError::new(name, format!("must be between {min} and {max}, got {value}")));
        }
        Ok(value)
    }
}

fn normalize(name: &str) -> String {
    name.replace(':', "__").to_ascii_lowercase()
}

pub(crate) fn shorten(raw: &str) -> String {
    raw.chars().take(40).collect()
}
