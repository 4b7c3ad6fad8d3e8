//! Parsing a JWKS into keys that are ready to verify.
//!
//! Owns: JWK validation (jwt_verify_lib `jwks.cc` rules plus meshguard's stricter ones)
//! and preparing each key for every algorithm it may verify, once, at parse time.
//! Does not own: fetching, caching or choosing which JWKS applies (policy/engine), nor
//! choosing a key for a token (`verify`).
//!
//! Key preparation, chosen to make each verification as cheap as aws-lc-rs allows:
//! * RSA: `n`/`e` go straight into `RsaPublicKeyComponents::to_parsed_public_key`, giving
//!   an `aws_lc_rs::signature::ParsedPublicKey` (a ready `EVP_PKEY`) per usable algorithm;
//!   no DER is encoded or re-parsed per verification. A key without `alg` gets six
//!   (RS256/384/512 and PS256/384/512).
//! * EC: `0x04 || x || y` parsed once into a `ParsedPublicKey` for the curve's algorithm
//!   (the point is checked to be on the curve here).
//! * OKP Ed25519: `x` parsed once into a `ParsedPublicKey`.
//! * oct: an `aws_lc_rs::hmac::Key` per usable HS algorithm.
//!
//! Per key, in this order (first failure skips the key, with a reason; other keys are
//! kept): must be an object; `kty` a string; `kid`, `alg` strings if present (meshguard:
//! a non-string `kid`/`alg` skips the key, Envoy ignores the member); `alg` known;
//! `use` absent or `"sig"`; `key_ops` absent or a list containing `"verify"`; then the
//! per-type rules:
//! * `RSA`: `alg` RS*/PS*; `n`, `e` strings in base64url; `e` is 3 or 65537 (Envoy);
//!   modulus 2048..=8192 bits (meshguard: aws-lc's `*_2048_8192_*` algorithms; Envoy also
//!   accepts smaller keys).
//! * `EC`: `alg` ES*; `crv` P-256/P-384/P-521, or derived from `alg`, or P-256 if
//!   neither; `alg` and `crv` must agree; `x`, `y` base64url of at most the field size.
//! * `oct`: `alg` HS* if present; `k` base64url, non-empty.
//! * `OKP`: `crv` `Ed25519`; `alg` EdDSA (or its RFC 9864 name `Ed25519`) if present; `x`
//!   32 bytes.
//! * anything else: skipped as unsupported.
//!
//! JWK members are base64url-decoded leniently (see `b64`). Private members (`d`, `p`,
//! ...) are ignored, but their presence is reported by [`Jwks::had_private_material`].
//! Keys are never deduplicated or filtered by `kid`.

use crate::alg::{Algorithm, Family};
use crate::b64;
use crate::json;
use crate::status::Status;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Deepest JSON nesting accepted in a JWKS document (a JWK with `x5c` is depth 4).
const MAX_JWKS_DEPTH: usize = 32;

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

/// A parsed JWKS, ready to verify. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<Key>,
    skipped: Vec<SkippedKey>,
    private: Vec<usize>,
}

/// A JWK that was not usable, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the JWKS `keys` array.
    pub index: usize,
    /// Its `kid`, if it had a string one.
    pub kid: Option<String>,
    /// Human-readable reason; never contains key material.
    pub reason: String,
}

/// One usable key.
pub struct Key {
    index: usize,
    kid: Option<String>,
    kty: &'static str,
    alg: Option<Algorithm>,
    curve: Option<&'static str>,
    /// `algorithms[i]` is verified with `verifiers[i]`.
    algorithms: Vec<Algorithm>,
    verifiers: Vec<Verifier>,
}

enum Verifier {
    Public(ParsedPublicKey),
    // Boxed: an HMAC context is over a kilobyte, public keys are pointers.
    Hmac(Box<hmac::Key>),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no key bytes.
        f.debug_struct("Key")
            .field("index", &self.index)
            .field("kid", &self.kid)
            .field("kty", &self.kty)
            .field("alg", &self.alg)
            .field("curve", &self.curve)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("keys", &self.inner.keys)
            .field("skipped", &self.inner.skipped)
            .finish()
    }
}

impl Key {
    /// `kid` as given (an empty `kid` matches any token `kid`, as in Envoy).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// `kty`: `"RSA"`, `"EC"`, `"oct"` or `"OKP"`.
    pub fn kty(&self) -> &str {
        self.kty
    }

    /// The JWK's `alg`, if it had one (`Ed25519` is reported as `EdDSA`).
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The curve for EC and OKP keys (`"P-256"`, `"P-384"`, `"P-521"`, `"Ed25519"`).
    pub fn curve(&self) -> Option<&str> {
        self.curve
    }

    /// Position of this key in the JWKS `keys` array.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Verifies `signature` over `message` with `alg`. `None` if this key cannot be used
    /// with `alg` at all.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Option<bool> {
        let (_, verifier) = self
            .algorithms
            .iter()
            .zip(&self.verifiers)
            .find(|(a, _)| **a == alg)?;
        let ok = match verifier {
            Verifier::Public(k) => k.verify_sig(message, signature).is_ok(),
            Verifier::Hmac(k) => hmac::verify(k, message, signature).is_ok(),
        };
        Some(ok)
    }
}

impl Jwks {
    /// Parses a JWKS document. Fails only for the document as a whole:
    /// `JwksParseError` (not a JSON object, duplicate members, too deep), `JwksNoKeys` (no
    /// `keys`), `JwksBadKeys` (`keys` not an array). Unusable keys are skipped and listed
    /// in [`Jwks::skipped`]; a JWKS with no usable key is `Ok` and empty.
    ///
    /// Envoy's other JWKS form, an object of X.509 PEM certificates without `keys`, is
    /// not supported (istiod refuses it too): it gives `JwksNoKeys`.
    pub fn parse(json: &str) -> Result<Jwks, Status> {
        let doc = json::parse_object(json.as_bytes(), MAX_JWKS_DEPTH)
            .map_err(|_| Status::JwksParseError)?;
        let list = match doc.get("keys") {
            None => return Err(Status::JwksNoKeys),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(Status::JwksBadKeys),
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        let mut private = Vec::new();
        for (index, jwk) in list.iter().enumerate() {
            let Some(obj) = jwk.as_object() else {
                skipped.push(SkippedKey {
                    index,
                    kid: None,
                    reason: "key is not a JSON object".to_owned(),
                });
                continue;
            };
            if obj.get("kty").and_then(Value::as_str) == Some("oct")
                || PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m))
            {
                private.push(index);
            }
            match parse_key(index, obj) {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(SkippedKey {
                    index,
                    kid: obj.get("kid").and_then(Value::as_str).map(str::to_owned),
                    reason,
                }),
            }
        }
        Ok(Jwks {
            inner: Arc::new(Inner {
                keys,
                skipped,
                private,
            }),
        })
    }

    /// A JWKS with no keys (every verification gives `JwksNoValidKeys`).
    pub fn empty() -> Jwks {
        Jwks {
            inner: Arc::new(Inner {
                keys: Vec::new(),
                skipped: Vec::new(),
                private: Vec::new(),
            }),
        }
    }

    /// Usable keys, in document order.
    pub fn keys(&self) -> &[Key] {
        &self.inner.keys
    }

    /// Keys that were skipped, in document order.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.inner.skipped
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    /// Indexes of JWKs that carried private members (`d`, `p`, `q`, `dp`, `dq`, `qi`) or
    /// were `oct` (a shared secret), usable or not: a JWKS is usually public, so this
    /// deserves a warning.
    pub fn had_private_material(&self) -> Vec<usize> {
        self.inner.private.clone()
    }
}

type KeyResult<T> = Result<T, String>;

fn reason(s: &str) -> String {
    s.to_owned()
}

/// `Some(Ok(s))` for a string member, `Some(Err)` for another type, `None` if absent.
fn opt_str<'a>(obj: &'a Map<String, Value>, name: &str) -> KeyResult<Option<&'a str>> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("[{name}] field is not a string")),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, name: &str, kty: &str) -> KeyResult<&'a str> {
    opt_str(obj, name)?.ok_or_else(|| format!("[{name}] field is missing for a {kty} key"))
}

fn b64_member(obj: &Map<String, Value>, name: &str, kty: &str) -> KeyResult<Vec<u8>> {
    let s = req_str(obj, name, kty)?;
    b64::decode_lenient(s)
        .ok_or_else(|| format!("[{name}] field is an invalid Base64url for a {kty} key"))
}

fn parse_key(index: usize, obj: &Map<String, Value>) -> KeyResult<Key> {
    let kty = match obj.get("kty") {
        None => return Err(reason("[kty] is missing in [keys]")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(reason("[kty] is bad in [keys]")),
    };
    let kid = opt_str(obj, "kid")?.map(str::to_owned);
    let alg = match opt_str(obj, "alg")? {
        None => None,
        Some(name) => Some(
            Algorithm::from_name(name)
                .ok_or_else(|| format!("[alg] {name:?} is not a supported signature algorithm"))?,
        ),
    };
    match opt_str(obj, "use")? {
        None | Some("sig") => {}
        Some(u) => return Err(format!("[use] is {u:?}, not \"sig\"")),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|l| l.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Err(reason("[key_ops] does not allow \"verify\""));
        }
    }
    let prepared = match kty {
        "RSA" => rsa_key(obj, alg)?,
        "EC" => ec_key(obj, alg)?,
        "oct" => oct_key(obj, alg)?,
        "OKP" => okp_key(obj, alg)?,
        _ => return Err(format!("[kty] {kty:?} is not supported in [keys]")),
    };
    Ok(Key {
        index,
        kid,
        kty: prepared.kty,
        alg,
        curve: prepared.curve,
        algorithms: prepared.algorithms,
        verifiers: prepared.verifiers,
    })
}

struct Prepared {
    kty: &'static str,
    curve: Option<&'static str>,
    algorithms: Vec<Algorithm>,
    verifiers: Vec<Verifier>,
}

fn rsa_params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

fn rsa_key(obj: &Map<String, Value>, alg: Option<Algorithm>) -> KeyResult<Prepared> {
    if alg.is_some_and(|a| a.family() != Family::Rsa) {
        return Err(reason(
            "[alg] is not started with [RS] or [PS] for an RSA key",
        ));
    }
    let n_raw = b64_member(obj, "n", "RSA")?;
    let e_raw = b64_member(obj, "e", "RSA")?;
    // Envoy's BN_bin2bn ignores leading zero bytes; aws-lc wants minimal encodings.
    let n = strip_leading_zeros(&n_raw);
    let e = strip_leading_zeros(&e_raw);
    if e != [3] && e != [1, 0, 1] {
        return Err(reason("RSA [e] must be 3 or 65537"));
    }
    let bits = match n.first() {
        None => 0,
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    };
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus is {bits} bits; meshguard accepts {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
        ));
    }
    let candidates: Vec<Algorithm> = match alg {
        Some(a) => vec![a],
        None => Algorithm::ALL
            .into_iter()
            .filter(|a| a.family() == Family::Rsa)
            .collect(),
    };
    let components = RsaPublicKeyComponents { n, e };
    let mut algorithms = Vec::with_capacity(candidates.len());
    let mut verifiers = Vec::with_capacity(candidates.len());
    for a in candidates {
        let params = rsa_params(a).ok_or_else(|| reason("internal: no RSA parameters"))?;
        let key = components
            .to_parsed_public_key(params)
            .map_err(|_| reason("RSA [n] or [e] do not form a valid public key"))?;
        algorithms.push(a);
        verifiers.push(Verifier::Public(key));
    }
    Ok(Prepared {
        kty: "RSA",
        curve: None,
        algorithms,
        verifiers,
    })
}

fn ec_key(obj: &Map<String, Value>, alg: Option<Algorithm>) -> KeyResult<Prepared> {
    if alg.is_some_and(|a| a.family() != Family::Ec) {
        return Err(reason("[alg] is not started with [ES] for an EC key"));
    }
    let crv = opt_str(obj, "crv").map_err(|_| reason("[crv] field is not string for an EC key"))?;
    let by_crv = match crv {
        None => None,
        Some("P-256") => Some(Algorithm::ES256),
        Some("P-384") => Some(Algorithm::ES384),
        Some("P-521") => Some(Algorithm::ES512),
        Some(_) => {
            return Err(reason(
                "[crv] or [alg] field is not supported for an EC key",
            ));
        }
    };
    let curve_alg = match (alg, by_crv) {
        (Some(a), Some(c)) if a != c => {
            return Err(reason(
                "[crv] field specified is not compatible with [alg] for an EC key",
            ));
        }
        (_, Some(c)) => c,
        (Some(a), None) => a,
        // jwt_verify_lib: neither alg nor crv means P-256.
        (None, None) => Algorithm::ES256,
    };
    let (field_len, verify_alg, curve): (usize, &'static signature::EcdsaVerificationAlgorithm, _) =
        match curve_alg {
            Algorithm::ES384 => (48, &signature::ECDSA_P384_SHA384_FIXED, "P-384"),
            Algorithm::ES512 => (66, &signature::ECDSA_P521_SHA512_FIXED, "P-521"),
            _ => (32, &signature::ECDSA_P256_SHA256_FIXED, "P-256"),
        };
    let x = b64_member(obj, "x", "EC")?;
    let y = b64_member(obj, "y", "EC")?;
    let mut point = Vec::with_capacity(1 + 2 * field_len);
    point.push(0x04);
    for coord in [&x, &y] {
        // Like BN_bin2bn, tolerate missing or extra leading zeros, but not a value that
        // cannot fit the field.
        let c = strip_leading_zeros(coord);
        if c.len() > field_len {
            return Err(reason("EC [x] or [y] is longer than the curve's field"));
        }
        point.resize(point.len() + field_len - c.len(), 0);
        point.extend_from_slice(c);
    }
    let key = ParsedPublicKey::new(verify_alg, &point)
        .map_err(|_| reason("EC [x] and [y] are not a point on the curve"))?;
    Ok(Prepared {
        kty: "EC",
        curve: Some(curve),
        algorithms: vec![curve_alg],
        verifiers: vec![Verifier::Public(key)],
    })
}

fn oct_key(obj: &Map<String, Value>, alg: Option<Algorithm>) -> KeyResult<Prepared> {
    if alg.is_some_and(|a| a.family() != Family::Hmac) {
        return Err(reason("[alg] does not start with [HS] for an HMAC key"));
    }
    let k = b64_member(obj, "k", "oct")?;
    if k.is_empty() {
        return Err(reason("[k] field is empty for an HMAC key"));
    }
    let candidates: Vec<Algorithm> = match alg {
        Some(a) => vec![a],
        None => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    };
    let verifiers = candidates
        .iter()
        .map(|a| {
            let h = match a {
                Algorithm::HS384 => hmac::HMAC_SHA384,
                Algorithm::HS512 => hmac::HMAC_SHA512,
                _ => hmac::HMAC_SHA256,
            };
            Verifier::Hmac(Box::new(hmac::Key::new(h, &k)))
        })
        .collect();
    Ok(Prepared {
        kty: "oct",
        curve: None,
        algorithms: candidates,
        verifiers,
    })
}

fn okp_key(obj: &Map<String, Value>, alg: Option<Algorithm>) -> KeyResult<Prepared> {
    if alg.is_some_and(|a| a != Algorithm::EdDSA) {
        return Err(reason("[alg] is not [EdDSA] for an OKP key"));
    }
    match opt_str(obj, "crv").map_err(|_| reason("[crv] field is not string for an OKP key"))? {
        None => return Err(reason("[crv] field is missing for an OKP key")),
        Some("Ed25519") => {}
        Some(_) => return Err(reason("[crv] field is not supported for an OKP key")),
    }
    let x = b64_member(obj, "x", "OKP")?;
    if x.len() != 32 {
        return Err(reason("Jwks OKP [x] field is wrong length."));
    }
    let key = ParsedPublicKey::new(&signature::ED25519, &x)
        .map_err(|_| reason("OKP [x] is not a valid Ed25519 public key"))?;
    Ok(Prepared {
        kty: "OKP",
        curve: Some("Ed25519"),
        algorithms: vec![Algorithm::EdDSA],
        verifiers: vec![Verifier::Public(key)],
    })
}
