//! A simple, documented estimate of how hard a configured secret is to guess, in bits.
//!
//! The estimate is the smaller of two measures, so a secret must pass both:
//!
//! 1. **Character statistics**: the empirical Shannon entropy of the characters times the length,
//!    computed on the shortest repeating unit (`"password" × 4` counts as one `"password"`). Catches
//!    repeated characters, repeated blocks and small alphabets.
//! 2. **Guessing patterns**: zxcvbn's estimate of guesses (dictionary words, keyboard walks,
//!    sequences, dates, l33t substitutions), as `log2(guesses)`, summed over 16-character windows
//!    (zxcvbn counts at most 2^64 guesses). Catches dictionary words.
//!
//! A random 48-byte value in base64url (`handler keys generate --algorithm HS256`) scores ~210
//! bits; [`MIN_SECRET_BITS`] is 128.
//!
//! The first measure is cheap and runs in [`crate::settings::Settings::load`]. The second is not:
//! zxcvbn builds its dictionaries on first use (~13 ms and ~8 MiB that stay resident for the life
//! of the process), so the server runs it in a short-lived child process after the port answers
//! (see [`crate::startup::SecretScoring`]), and no request that uses a key is served before it passed.

/// The least estimated entropy accepted for an HS256 key or the rotation secret.
pub const MIN_SECRET_BITS: f64 = 128.0;

/// Secrets are scored by zxcvbn in windows of this many characters, summed: zxcvbn counts guesses
/// in a `u64` (at most 64 bits), which a random window of 16 characters stays below.
const ZXCVBN_WINDOW: usize = 16;

/// Estimated bits of entropy of `secret` (see the module documentation).
pub fn estimate_bits(secret: &str) -> f64 {
    statistical_bits(secret).min(pattern_bits(secret))
}

/// The shortest prefix that, repeated, gives the whole string (a partial last repeat allowed).
fn repeating_unit(chars: &[char]) -> &[char] {
    // A period p holds when every char equals the one p places before it.
    (1..=chars.len())
        .find(|&p| chars.iter().skip(p).zip(chars).all(|(later, earlier)| later == earlier))
        .and_then(|p| chars.get(..p))
        .unwrap_or(chars)
}

/// Measure 1, character statistics (cheap).
pub fn statistical_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().collect();
    let unit = repeating_unit(&chars);
    let mut counts = std::collections::HashMap::new();
    for c in unit {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    let n = unit.len() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

/// Measure 2, guessing patterns (zxcvbn: builds its dictionaries on the first call).
pub fn pattern_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .chunks(ZXCVBN_WINDOW)
        .map(|window| {
            let text: String = window.iter().collect();
            zxcvbn::zxcvbn(&text, &[]).guesses_log10() * std::f64::consts::LOG2_10
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_score_low() {
        for weak in [
            "k".repeat(48),
            "password".repeat(4),
            "ab".repeat(40),
            "0123456789".repeat(5),
            "correcthorsebatterystaplecorrecthorse".into(),
            "api-test-signing-key-0123456789-abcdefgh".into(),
            "replace-with-at-least-32-random-bytes-0000".into(),
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcccccccccccccccc".into(),
        ] {
            let bits = estimate_bits(&weak);
            assert!(bits < MIN_SECRET_BITS, "{weak:?} scored {bits}");
        }
    }

    #[test]
    fn random_secrets_score_high() {
        for strong in [
            "Qm9yZWQgd2l0aCBrZXlzPyBVc2UgaGFuZGxlciBrZXlzIGdlbmVyYXRlIQ-_x7Zq", // 64 base64url chars
            "7f3c9a1e5b2d8f4a6c0e9b3d7a1f5c2e8b4d6a0f3c7e1b9d5a2f8c4e6b0d3a7f", // 64 hex chars
            "tG4#pL9!vQ2@wX7$kR5^mN8&bJ3*hF6(zD1)yC0_",
        ] {
            let bits = estimate_bits(strong);
            assert!(bits >= MIN_SECRET_BITS, "{strong:?} scored {bits}");
        }
    }

    #[test]
    fn repetition_is_counted_once() {
        let unit = "tG4#pL9!vQ2@";
        assert_eq!(repeating_unit(&unit.repeat(3).chars().collect::<Vec<_>>()).len(), unit.len());
        assert!(statistical_bits(&unit.repeat(5)) < statistical_bits(unit) + 1.0);
        assert!(estimate_bits(&unit.repeat(5)) < MIN_SECRET_BITS);
    }
}
