//! Token formats: signed JWT access tokens ([`access`], keys in [`keys`]) and opaque, self-locating
//! refresh tokens ([`refresh`]). No storage here; every check that depends on time takes `now`.

pub mod access;
pub mod dpop;
pub mod generate;
pub mod keys;
pub mod mfa;
pub mod refresh;
pub mod sealed;
