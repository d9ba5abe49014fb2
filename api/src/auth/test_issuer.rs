//! A token issuer for tests (the `test-issuer` feature, never in a release build): an
//! ECDSA P-256 key made on the spot, its JWK, and the tokens it signs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub struct TestIssuer {
    pub issuer: String,
    pub kid: String,
    key: EncodingKey,
    /// The public key as an uncompressed point: 0x04, x, y.
    public: Vec<u8>,
}

impl TestIssuer {
    /// An issuer named `issuer` with one new key, `kid`.
    pub fn new(issuer: &str, kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the key just made");
        Self {
            issuer: issuer.to_owned(),
            kid: kid.to_owned(),
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]),
        })
    }

    /// A JWKS of this issuer's key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// `claims` signed with this issuer's key, its kid in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing")
    }

    /// A token of this issuer for `subject` and `audience` that expires in
    /// `expires_in` seconds (negative: expired that long ago).
    pub fn token(&self, subject: &str, audience: &str, expires_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + expires_in,
        }))
    }
}
