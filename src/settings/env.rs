//! The environment source: a snapshot of app settings, keyed case-insensitively with `:` read as
//! `__`, and typed number parsing that names the setting on failure.

use std::collections::HashMap;
use std::fmt;

use super::SettingsError;
use super::names::{self, DefaultValue, Kind};

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

    /// The names set, normalised (lower case, `__`), for the check of unknown names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The integer setting `name`, with the default and bounds of its row in [`names::ALL`].
    pub(crate) fn int<T: TryFrom<i64>>(&self, name: &str) -> Result<T, SettingsError> {
        let (default, _, _) = int_row(name)?;
        let DefaultValue::Int(default) = default else {
            return Err(SettingsError::new(name, "has no fixed default in src/settings/names.rs"));
        };
        self.int_or(name, default)
    }

    /// The integer setting `name` with a default computed at start-up, and the bounds of its row.
    pub(crate) fn int_or<T: TryFrom<i64>>(&self, name: &str, default: i64) -> Result<T, SettingsError> {
        let (_, min, max) = int_row(name)?;
        let value = match self.get(name) {
            None => default,
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .map_err(|_| SettingsError::new(name, format!("must be a whole number, got {:?}", shorten(raw))))?,
        };
        if value < min || value > max {
            return Err(SettingsError::new(name, format!("must be between {min} and {max}, got {value}")));
        }
        T::try_from(value).map_err(|_| SettingsError::new(name, format!("cannot hold {value}")))
    }
}

/// The default and bounds of an integer row of the table.
fn int_row(name: &str) -> Result<(DefaultValue, i64, i64), SettingsError> {
    match names::Setting::find(name) {
        Some(names::Setting { kind: Kind::Integer { min, max }, default, .. }) => Ok((*default, *min, *max)),
        _ => Err(SettingsError::new(name, "is not an integer setting in src/settings/names.rs")),
    }
}

fn normalize(name: &str) -> String {
    name.replace(':', "__").to_ascii_lowercase()
}

pub(crate) fn shorten(raw: &str) -> String {
    raw.chars().take(40).collect()
}
