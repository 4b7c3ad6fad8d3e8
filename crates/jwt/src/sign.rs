//! Token signing, for tests and the `meshguard token sign` tool.
//!
//! Owns: private keys (PEM import, generation, PKCS#8 export), public JWK export, RFC 7638
//! thumbprints and producing compact JWS. Does not own: anything on the verification
//! path; the proxy never needs this module to answer a request.
//!
//! All crypto is aws-lc-rs. Signatures: RS* RSASSA-PKCS1-v1_5, PS* RSASSA-PSS with MGF1 of
//! the same hash and salt = hash length, ES* fixed-width `r || s`, EdDSA Ed25519, HS* HMAC.

use crate::alg::{Algorithm, Family};
use crate::b64;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
};
use aws_lc_rs::{digest, hmac, rand, rsa};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::fmt;

/// What [`SigningKey::generate`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with this many modulus bits: 2048, 3072, 4096 or 8192.
    Rsa(usize),
    /// ECDSA P-256 (ES256).
    EcP256,
    /// ECDSA P-384 (ES384).
    EcP384,
    /// ECDSA P-521 (ES512).
    EcP521,
    /// Ed25519 (EdDSA).
    Ed25519,
    /// HMAC secret of this many random bytes (at least 1).
    Hmac(usize),
}

/// Why a key could not be loaded or used. Messages never contain key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignError {
    /// No `BEGIN ... PRIVATE KEY` block (RSA, EC or PKCS#8) was found.
    #[error("no supported private key block in PEM input")]
    NoPrivateKey,
    /// The PEM text is malformed (bad base64, missing END line, encrypted key, ...).
    #[error("malformed PEM: {0}")]
    BadPem(&'static str),
    /// The DER inside the PEM is not a key aws-lc accepts.
    #[error("private key rejected: {0}")]
    KeyRejected(&'static str),
    /// The key cannot produce this algorithm (e.g. ES384 with a P-256 key).
    #[error("algorithm {alg} cannot be used with a {key} key")]
    AlgorithmMismatch {
        /// The requested algorithm.
        alg: Algorithm,
        /// The key's type, e.g. `"RSA"` or `"EC P-256"`.
        key: &'static str,
    },
    /// Generation was asked for a size aws-lc cannot make.
    #[error("unsupported key size {0}")]
    UnsupportedKeySize(usize),
    /// aws-lc reported a failure while generating or signing.
    #[error("cryptographic operation failed")]
    Crypto,
    /// Header or claims could not be serialized.
    #[error("JSON serialization failed")]
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    fn alg(self) -> Algorithm {
        match self {
            Curve::P256 => Algorithm::ES256,
            Curve::P384 => Algorithm::ES384,
            Curve::P521 => Algorithm::ES512,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Curve::P256 => "EC P-256",
            Curve::P384 => "EC P-384",
            Curve::P521 => "EC P-521",
        }
    }

    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, Curve),
    Ed25519(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A private (or, for HMAC, shared) key that can sign tokens.
///
/// `Debug` names the key type only.
pub struct SigningKey {
    inner: Inner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// One PEM block: its label and DER bytes.
fn pem_blocks(pem: &str) -> Result<Vec<(String, Vec<u8>)>, SignError> {
    let mut out = Vec::new();
    let mut lines = pem.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                return Err(SignError::BadPem(
                    "encrypted or annotated PEM is not supported",
                ));
            }
            body.push_str(l);
        }
        if !closed {
            return Err(SignError::BadPem("missing END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| SignError::BadPem("invalid base64"))?;
        out.push((label.to_owned(), der));
    }
    Ok(out)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        // Chunks of ASCII base64 are valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn rejected(e: aws_lc_rs::error::KeyRejected) -> SignError {
    SignError::KeyRejected(e.description_())
}

impl SigningKey {
    /// Loads the first private key found in `pem`: PKCS#1 `RSA PRIVATE KEY`, SEC1
    /// `EC PRIVATE KEY` (P-256/384/521), or PKCS#8 `PRIVATE KEY` (RSA, EC, Ed25519).
    /// Other blocks (certificates, `EC PARAMETERS`) are skipped. Encrypted keys are not
    /// supported.
    pub fn from_pem(pem: &str) -> Result<SigningKey, SignError> {
        for (label, der) in pem_blocks(pem)? {
            let inner = match label.as_str() {
                "RSA PRIVATE KEY" => Inner::Rsa(RsaKeyPair::from_der(&der).map_err(rejected)?),
                "EC PRIVATE KEY" => Curve::ALL
                    .into_iter()
                    .find_map(|c| {
                        EcdsaKeyPair::from_private_key_der(c.signing(), &der)
                            .ok()
                            .map(|k| Inner::Ec(k, c))
                    })
                    .ok_or(SignError::KeyRejected("not a P-256, P-384 or P-521 EC key"))?,
                "PRIVATE KEY" => Self::from_pkcs8(&der)?,
                _ => continue,
            };
            return Ok(SigningKey { inner });
        }
        Err(SignError::NoPrivateKey)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Inner, SignError> {
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            return Ok(Inner::Rsa(k));
        }
        for c in Curve::ALL {
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(c.signing(), der) {
                return Ok(Inner::Ec(k, c));
            }
        }
        Ed25519KeyPair::from_pkcs8(der)
            .map(Inner::Ed25519)
            .map_err(|_| {
                SignError::KeyRejected("PKCS#8 key is not RSA, EC P-256/384/521 or Ed25519")
            })
    }

    /// An HMAC key from a shared secret.
    pub fn hmac(secret: &[u8]) -> SigningKey {
        SigningKey {
            inner: Inner::Hmac(secret.to_vec()),
        }
    }

    /// Generates a fresh key with aws-lc-rs.
    pub fn generate(kind: KeyKind) -> Result<SigningKey, SignError> {
        let inner = match kind {
            KeyKind::Rsa(bits) => {
                let size = match bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    8192 => rsa::KeySize::Rsa8192,
                    other => return Err(SignError::UnsupportedKeySize(other)),
                };
                Inner::Rsa(RsaKeyPair::generate(size).map_err(|_| SignError::Crypto)?)
            }
            KeyKind::EcP256 => Self::generate_ec(Curve::P256)?,
            KeyKind::EcP384 => Self::generate_ec(Curve::P384)?,
            KeyKind::EcP521 => Self::generate_ec(Curve::P521)?,
            KeyKind::Ed25519 => {
                Inner::Ed25519(Ed25519KeyPair::generate().map_err(|_| SignError::Crypto)?)
            }
            KeyKind::Hmac(0) => return Err(SignError::UnsupportedKeySize(0)),
            KeyKind::Hmac(len) => {
                let mut secret = vec![0u8; len];
                rand::fill(&mut secret).map_err(|_| SignError::Crypto)?;
                Inner::Hmac(secret)
            }
        };
        Ok(SigningKey { inner })
    }

    fn generate_ec(c: Curve) -> Result<Inner, SignError> {
        EcdsaKeyPair::generate(c.signing())
            .map(|k| Inner::Ec(k, c))
            .map_err(|_| SignError::Crypto)
    }

    /// What kind of key this is (RSA bits, curve, or HMAC secret length).
    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            Inner::Rsa(k) => KeyKind::Rsa(k.public_modulus_len() * 8),
            Inner::Ec(_, Curve::P256) => KeyKind::EcP256,
            Inner::Ec(_, Curve::P384) => KeyKind::EcP384,
            Inner::Ec(_, Curve::P521) => KeyKind::EcP521,
            Inner::Ed25519(_) => KeyKind::Ed25519,
            Inner::Hmac(s) => KeyKind::Hmac(s.len()),
        }
    }

    /// PEM export: PKCS#8 `PRIVATE KEY` for RSA, EC and Ed25519. An HMAC secret has no
    /// PEM form: it is returned as one line of unpadded base64url (the JWK `k` value).
    pub fn to_pem(&self) -> Result<String, SignError> {
        let der: Vec<u8> = match &self.inner {
            Inner::Rsa(k) => k.as_der().map_err(|_| SignError::Crypto)?.as_ref().to_vec(),
            Inner::Ec(k, _) => k
                .to_pkcs8v1()
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec(),
            Inner::Ed25519(k) => k
                .to_pkcs8v1()
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec(),
            Inner::Hmac(s) => return Ok(format!("{}\n", b64::encode(s))),
        };
        Ok(pem_encode("PRIVATE KEY", &der))
    }

    /// The public JWK (`kty` and public members, plus `kid` if given). For HMAC this is
    /// the `oct` key itself, i.e. the secret.
    pub fn public_jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = match &self.inner {
            Inner::Rsa(k) => {
                let p = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64::encode(p.modulus().big_endian_without_leading_zero()),
                    "e": b64::encode(p.exponent().big_endian_without_leading_zero()),
                })
            }
            Inner::Ec(k, c) => {
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                let n = c.field_len();
                let (x, y) = point
                    .get(1..1 + n)
                    .zip(point.get(1 + n..1 + 2 * n))
                    .unwrap_or((&[], &[]));
                json!({"kty": "EC", "crv": c.name(), "x": b64::encode(x), "y": b64::encode(y)})
            }
            Inner::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(k.public_key().as_ref())})
            }
            Inner::Hmac(s) => json!({"kty": "oct", "k": b64::encode(s)}),
        };
        if let (Some(kid), Some(obj)) = (kid, jwk.as_object_mut()) {
            obj.insert("kid".to_owned(), Value::String(kid.to_owned()));
        }
        jwk
    }

    /// RFC 7638 JWK thumbprint of [`SigningKey::public_jwk`].
    pub fn thumbprint(&self) -> String {
        // public_jwk always yields the required members, so the default is never used.
        self.public_jwk(None)
            .as_object()
            .and_then(jwk_thumbprint)
            .unwrap_or_default()
    }

    /// RS256 for RSA, ES256/384/512 by curve, EdDSA, HS256 for HMAC.
    pub fn default_algorithm(&self) -> Algorithm {
        match &self.inner {
            Inner::Rsa(_) => Algorithm::RS256,
            Inner::Ec(_, c) => c.alg(),
            Inner::Ed25519(_) => Algorithm::EdDSA,
            Inner::Hmac(_) => Algorithm::HS256,
        }
    }

    fn label(&self) -> &'static str {
        match &self.inner {
            Inner::Rsa(_) => "RSA",
            Inner::Ec(_, c) => c.label(),
            Inner::Ed25519(_) => "Ed25519",
            Inner::Hmac(_) => "HMAC",
        }
    }

    fn sign_bytes(&self, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, SignError> {
        let mismatch = SignError::AlgorithmMismatch {
            alg,
            key: self.label(),
        };
        let rng = rand::SystemRandom::new();
        match (&self.inner, alg.family()) {
            (Inner::Hmac(secret), Family::Hmac) => {
                let h = match alg {
                    Algorithm::HS384 => hmac::HMAC_SHA384,
                    Algorithm::HS512 => hmac::HMAC_SHA512,
                    _ => hmac::HMAC_SHA256,
                };
                Ok(hmac::sign(&hmac::Key::new(h, secret), input)
                    .as_ref()
                    .to_vec())
            }
            (Inner::Rsa(k), Family::Rsa) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut sig)
                    .map_err(|_| SignError::Crypto)?;
                Ok(sig)
            }
            (Inner::Ec(k, c), Family::Ec) if c.alg() == alg => Ok(k
                .sign(&rng, input)
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec()),
            (Inner::Ed25519(k), Family::Ed25519) => Ok(k.sign(input).as_ref().to_vec()),
            _ => Err(mismatch),
        }
    }
}

/// RFC 7638 thumbprint (base64url SHA-256 of the required members in lexical order) of a
/// public JWK of type RSA, EC, OKP or oct. `None` if a required member is missing or not
/// a string.
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "oct" => &["k", "kty"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let v = jwk.get(*m)?.as_str()?;
        if i > 0 {
            canonical.push(',');
        }
        // serde_json escapes exactly as RFC 7638 §3.3 requires (no insignificant space).
        canonical.push_str(&serde_json::to_string(m).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(v).ok()?);
    }
    canonical.push('}');
    Some(b64::encode(
        digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
    ))
}

/// Signs `claims` as a compact JWS. `header` is copied and its `alg` set to `alg`
/// (overriding any given one); both objects are serialized compactly.
pub fn sign(
    alg: Algorithm,
    key: &SigningKey,
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
) -> Result<String, SignError> {
    let mut header = header.clone();
    header.insert("alg".to_owned(), Value::String(alg.as_str().to_owned()));
    let header_json = serde_json::to_string(&header).map_err(|_| SignError::Json)?;
    let payload_json = serde_json::to_string(claims).map_err(|_| SignError::Json)?;
    sign_raw(alg, key, &header_json, &payload_json)
}

/// Signs byte-exact header and payload text with `alg`. Nothing is parsed or checked:
/// the header's own `alg` may disagree with `alg`, members may repeat, the payload need
/// not be JSON. Meant for building attack and conformance tokens.
pub fn sign_raw(
    alg: Algorithm,
    key: &SigningKey,
    header_json: &str,
    payload_json: &str,
) -> Result<String, SignError> {
    let mut token = b64::encode(header_json.as_bytes());
    token.push('.');
    token.push_str(&b64::encode(payload_json.as_bytes()));
    let sig = key.sign_bytes(alg, token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(&sig));
    Ok(token)
}
