//! A software WebAuthn authenticator for black-box tests: a P-256 key (ES256), `none`
//! attestation, user verification, a signature counter, and the credential as WebAuthn's JSON
//! serialisation carries it (binary members base64url). It signs for whatever origin the test
//! names, so tests can also play an attacker's page. Formats: WebAuthn Level 3 §6.1
//! (authenticator data), §6.5.1 (attested credential data), §5.8.1 (client data), RFC 9053 §7.1
//! (the COSE EC2 key), RFC 8949 (CBOR).
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).unwrap()
}

/// CBOR byte string header (RFC 8949 §3.1, major type 2).
fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        n if n < 24 => out.push(0x40 | u8::try_from(n).unwrap()),
        n if n < 256 => out.extend([0x58, u8::try_from(n).unwrap()]),
        n => {
            out.push(0x59);
            out.extend(u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

/// CBOR text string (major type 3), short strings only.
fn cbor_text(out: &mut Vec<u8>, text: &str) {
    out.push(0x60 | u8::try_from(text.len()).unwrap());
    out.extend_from_slice(text.as_bytes());
}

/// A passkey on a software authenticator.
#[derive(Clone)]
pub struct SoftAuthenticator {
    pkcs8: Vec<u8>,
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The signature counter (0: an authenticator that keeps none).
    pub counter: u32,
    /// Counts up with every assertion.
    pub counts: bool,
    /// A synced passkey (backup eligible and backed up).
    pub synced: bool,
    /// The user handle of its registration.
    pub user_handle: Vec<u8>,
}

impl std::fmt::Debug for SoftAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftAuthenticator").field("credential_id", &b64(&self.credential_id)).finish_non_exhaustive()
    }
}

impl SoftAuthenticator {
    /// A fresh authenticator with a random credential id; `counts`: it keeps a signature counter.
    pub fn new(counts: bool, synced: bool) -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).unwrap();
        let mut credential_id = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut credential_id).unwrap();
        Self { pkcs8: pkcs8.as_ref().to_vec(), credential_id, counter: 0, counts, synced, user_handle: Vec::new() }
    }

    fn key(&self) -> EcdsaKeyPair {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8).unwrap()
    }

    fn flags(&self, attested: bool) -> u8 {
        // UP, UV, and BE/BS for a synced passkey; AT with attested credential data.
        let mut flags = 0x01 | 0x04;
        if self.synced {
            flags |= 0x08 | 0x10;
        }
        if attested {
            flags |= 0x40;
        }
        flags
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false}).to_string().into_bytes()
    }

    /// `navigator.credentials.create()` with the service's creation `options` (the `options`
    /// member of `register/start`), on a page of `origin`: the `credential` to finish with.
    pub fn register(&mut self, options: &Value, origin: &str) -> Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rp"]["id"].as_str().unwrap();
        self.user_handle = unb64(public_key["user"]["id"].as_str().unwrap());
        let client_data = Self::client_data("webauthn.create", public_key["challenge"].as_str().unwrap(), origin);
        let point = self.key().public_key().as_ref().to_vec(); // 0x04 ‖ x ‖ y
        let mut cose = vec![0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bytes(&mut cose, &point[1..33]);
        cose.push(0x22);
        cbor_bytes(&mut cose, &point[33..65]);
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(true));
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID
        auth_data.extend(u16::try_from(self.credential_id.len()).unwrap().to_be_bytes());
        auth_data.extend(&self.credential_id);
        auth_data.extend(cose);
        let mut attestation = vec![0xA3];
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        attestation.push(0xA0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal"],
            },
            "extensions": {},
        })
    }

    /// `navigator.credentials.get()` with the service's request `options`, on a page of
    /// `origin`: the `credential` to finish with. The counter moves first when it counts.
    pub fn assert(&mut self, options: &Value, origin: &str) -> Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rpId"].as_str().unwrap();
        if self.counts {
            self.counter += 1;
        }
        let client_data = Self::client_data("webauthn.get", public_key["challenge"].as_str().unwrap(), origin);
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(false));
        auth_data.extend(self.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client_data));
        let signature = self.key().sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(auth_data),
                "clientDataJSON": b64(client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}
