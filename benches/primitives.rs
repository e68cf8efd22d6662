//! Raw limits of the primitives a request is made of, one core each (criterion): argon2id with the
//! service's parameters, JWT sign + verify per algorithm, refresh-token issue and parse + verify.
//! `scripts/bench.sh` runs these and `examples/load.rs` puts the estimates next to the HTTP numbers.
//!
//! `cargo bench --bench primitives`
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use criterion::{Criterion, criterion_group, criterion_main};
use jwt_refresh_token::secret::SecretBytes;
use jwt_refresh_token::settings::{Descriptor, SigningAlgorithm};
use jwt_refresh_token::tokens::access::{AccessTokens, Expiry, Subject};
use jwt_refresh_token::tokens::generate::generate;
use jwt_refresh_token::tokens::keys::KeySet;
use jwt_refresh_token::tokens::refresh::RefreshTokens;

const NOW: i64 = 1_700_000_000_000;

fn argon2id(c: &mut Criterion) {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let params = Params::default();
    assert_eq!((params.m_cost(), params.t_cost(), params.p_cost()), (19_456, 2, 1), "OWASP parameters");
    let mut blocks = vec![Block::default(); params.block_count()];
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(10);
    group.bench_function("m19456_t2_p1", |b| {
        b.iter(|| hasher.hash_password_into_with_memory(b"password-0123", b"saltsaltsaltsalt", &mut out, &mut blocks))
    });
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_sign_verify");
    for (name, algorithm) in
        [("HS256", SigningAlgorithm::Hs256), ("ES256", SigningAlgorithm::Es256), ("EdDSA", SigningAlgorithm::EdDsa)]
    {
        let key = generate(algorithm).unwrap();
        let descriptor = Descriptor {
            issuer: "https://bench".into(),
            audience: "bench".into(),
            algorithm,
            algorithm_key: key.value,
            previous_keys: Vec::new(),
            clock_skew_ms: 0,
        };
        let tokens = AccessTokens::new(
            KeySet::from_descriptor(&descriptor).unwrap(),
            "https://bench".into(),
            "bench".into(),
            900_000,
            0,
        );
        let roles = vec!["reader".to_string()];
        let amr = vec!["pwd".to_string()];
        let subject = Subject {
            user_id: "user-id",
            name: "bench",
            roles: &roles,
            session_id: "AAAAAAAAAAAAAAAAAAAAAA",
            jkt: None,
            amr: &amr,
            auth_time_ms: Some(NOW),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let signed = tokens.sign(subject, NOW).unwrap();
                tokens.verify(&signed.token, NOW, Expiry::Enforce).unwrap()
            })
        });
    }
    group.finish();
}

fn refresh_tokens(c: &mut Criterion) {
    let tokens = RefreshTokens::new(SecretBytes::new(vec![7u8; 32]));
    let seed = [9u8; 32];
    let session = "AAAAAAAAAAAAAAAAAAAAAA";
    let token = tokens.issue("user-id", session, 42, &seed).unwrap();
    let mut group = c.benchmark_group("refresh_token");
    group.bench_function("issue", |b| b.iter(|| tokens.issue("user-id", session, 42, &seed).unwrap()));
    group.bench_function("parse_verify", |b| {
        b.iter(|| {
            let parts = tokens.parse(&token).unwrap();
            assert!(tokens.verify(&parts, &seed));
        })
    });
    group.finish();
}

criterion_group!(benches, argon2id, jwt, refresh_tokens);
criterion_main!(benches);
