//! `meshguard token`: make keys, sign, decode and verify JWTs, in place of Istio's
//! `gen-jwt.py` and jwt.io.
//!
//! Owns: the `token` flags, reading keys, tokens and JWKS from files (or stdin, or a URL),
//! building headers and claims, and printing. Does not own any crypto, decoding or checking:
//! that is `meshguard_jwt`, the code the proxy runs, so `token verify` gives the answer the
//! proxy would give for one provider with the same issuer, audiences and keys.
//!
//! Exit status: 0 done (or token valid), 2 token invalid (`verify` only), 1 error.
//! Secrets stay put: only `keygen` prints private key material (the key it was asked for),
//! and no error message contains a token, a key or a signature.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use meshguard_jwt::{
    Algorithm, Jwks, KeyKind, Limits, SigningKey, Status, Token, Validation, sign, verify,
};
use serde_json::{Map, Value, json};

use crate::{CliError, OutputFormat};

/// Istio's clock skew, used by every time check (and therefore by the time notes printed here).
const SKEW_SECS: u64 = 60;

/// gen-jwt.py's default issuer, so tokens match Istio's samples without flags.
const DEFAULT_ISSUER: &str = "testing@secure.istio.io";

/// gen-jwt.py's default lifetime.
const DEFAULT_EXPIRE_SECS: i64 = 3600;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # A key pair: private key (mode 0600) and the JWKS to paste into a RequestAuthentication
  meshguard token keygen --out key.pem --jwks jwks.json

  # A token like Istio's gen-jwt.py makes (iss testing@secure.istio.io, exp in one hour)
  meshguard token sign --key key.pem --claim foo=bar

  # What is in it, and would meshguard accept it?
  meshguard token decode @token.jwt
  meshguard token verify @token.jwt --jwks jwks.json --issuer testing@secure.istio.io

Exit status: 0 ok (verify: valid), 2 token invalid (verify), 1 error.")]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Generate a signing key: the private key (PEM), and with --jwks its public JWKS.
    Keygen(KeygenArgs),
    /// Sign a JWT (every gen-jwt.py option, and more).
    Sign(SignArgs),
    /// Print a token's header, claims and times. The signature is NOT verified.
    Decode(DecodeArgs),
    /// Verify a token exactly as meshguard's proxy would (Envoy's checks, order and answers).
    Verify(VerifyArgs),
    /// Print the public JWKS of a private key.
    Jwks(JwksArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeyType {
    Rsa,
    Ec,
    Ed25519,
    Hmac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Curve {
    #[value(name = "P-256", alias = "p256")]
    P256,
    #[value(name = "P-384", alias = "p384")]
    P384,
    #[value(name = "P-521", alias = "p521")]
    P521,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # RSA 2048 (the default), like `openssl genrsa 2048` plus gen-jwt.py --jwks
  meshguard token keygen --out key.pem --jwks jwks.json

  # EC P-384 (ES384), Ed25519 (EdDSA)
  meshguard token keygen --type ec --curve P-384 --out ec.pem --jwks ec-jwks.json
  meshguard token keygen --type ed25519 --out ed.pem

  # An HMAC secret for HS512: the key file holds the secret as one line of base64url, and the
  # JWKS holds the same secret as an `oct` key, so keep both private
  meshguard token keygen --type hmac --alg HS512 --out secret.key --jwks secret-jwks.json

The JWK's `kid` is its RFC 7638 thumbprint unless --kid is given (gen-jwt.py does the same), and
`token sign` uses the same thumbprint as the token's `kid`, so they match without flags.")]
struct KeygenArgs {
    /// Key type (default: rsa, or the type --alg needs).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    key_type: Option<KeyType>,
    /// RSA modulus size: 2048 (default), 3072, 4096 or 8192. HMAC: secret size in bits
    /// (default and minimum: the hash size of --alg, 256 for HS256).
    #[arg(long, value_name = "BITS")]
    bits: Option<usize>,
    /// EC curve (default: P-256, or the curve --alg needs).
    #[arg(long, value_enum, value_name = "CURVE")]
    curve: Option<Curve>,
    /// The JWK's `alg` (default: RS256, ES256/384/512 by curve, EdDSA, HS256).
    #[arg(long, value_name = "ALG")]
    alg: Option<String>,
    /// Write the private key here (created with mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write the public JWKS `{"keys":[jwk]}` here.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// The JWK's `kid` (default: the key's RFC 7638 thumbprint).
    #[arg(long, value_name = "KID", requires = "jwks")]
    kid: Option<String>,
    /// Overwrite an existing --out file.
    #[arg(long)]
    force: bool,
}

/// The key that signs (`sign`) or whose public part is printed (`jwks`).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct KeySource {
    /// The private key: PEM (PKCS#1 RSA, SEC1 EC, or PKCS#8 RSA/EC/Ed25519), or an HMAC secret
    /// file written by `token keygen --type hmac` (one line of base64url).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// An HMAC shared secret: the file's bytes as they are (one trailing newline removed).
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Istio's demo.jwt, byte for byte (RS256 signatures are deterministic)
  meshguard token sign --key testdata/istio-demo/key.pem --claim foo=bar \\
      --iat 1532389700 --expire 3153600000

  # gen-jwt.py key.pem -aud a,b -listclaim groups g1 g2 -nestedclaim key1 valueC
  meshguard token sign --key key.pem --aud a --aud b --list-claim groups=g1,g2 \\
      --nested-claim nested.key1=valueC --nested-claim nested.nested-2.key1=valueC

  # Any JSON, and claims with dots in their names
  meshguard token sign --key key.pem --json-claim 'roles=[\"admin\"]' \\
      --claim 'test-issuer-1@istio.io/simple=valueC'

  # Already expired two minutes ago (past the 60 s clock skew); or no exp at all
  meshguard token sign --key key.pem --expire -120
  meshguard token sign --key key.pem --no-exp

  # Reproducible: iat fixed, exp = iat + 3600
  meshguard token sign --key key.pem --iat 1700000000

Claims: iss (default testing@secure.istio.io), sub (default: iss), iat (now), exp (now + 3600),
then nbf and aud when asked. --claim, --list-claim, --json-claim and --nested-claim may also set
iss, sub, exp, ... (to build odd tokens) unless the dedicated flag is given too; a name set twice
is an error. Header: {\"alg\", \"typ\": \"JWT\", \"kid\": <RFC 7638 thumbprint of the key>}.")]
struct SignArgs {
    #[command(flatten)]
    key: KeySource,
    /// Signature algorithm (default: RS256, ES256/384/512 by curve, EdDSA, HS256). `none` is
    /// refused.
    #[arg(long, value_name = "ALG")]
    alg: Option<String>,
    /// Header `kid` (default: the key's RFC 7638 thumbprint, like gen-jwt.py).
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// No `kid` in the header (then every key of the right type is tried).
    #[arg(long, conflicts_with = "kid")]
    no_kid: bool,
    /// `iss` claim [default: testing@secure.istio.io].
    #[arg(long, value_name = "ISS")]
    iss: Option<String>,
    /// `sub` claim [default: the issuer].
    #[arg(long, value_name = "SUB")]
    sub: Option<String>,
    /// `aud` claim, repeatable: once gives a string, several give a list.
    #[arg(long, value_name = "AUD")]
    aud: Vec<String>,
    /// A string claim `name=value` (repeatable). The name is taken literally, dots included.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// A list-of-strings claim `name=v1,v2` (repeatable); `name=` gives an empty list.
    #[arg(long = "list-claim", value_name = "NAME=V1,V2")]
    list_claims: Vec<String>,
    /// A claim with any JSON value `name=<json>` (repeatable), e.g. `n=3`, `o={"a":[1]}`.
    #[arg(long = "json-claim", value_name = "NAME=JSON")]
    json_claims: Vec<String>,
    /// A string inside nested objects `a.b.c=value` (repeatable; paths share their objects).
    #[arg(long = "nested-claim", value_name = "PATH=VALUE")]
    nested_claims: Vec<String>,
    /// Remove a claim that is set by default (`iat`, `sub`, `iss`, ...); repeatable.
    #[arg(long = "drop-claim", value_name = "NAME")]
    drop_claims: Vec<String>,
    /// `exp` = now + SECONDS [default: 3600]; negative makes an expired token.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    expire: Option<i64>,
    /// No `exp` claim (the token never expires).
    #[arg(long, conflicts_with = "expire")]
    no_exp: bool,
    /// `nbf` = now + SECONDS (may be negative).
    #[arg(long, value_name = "SECONDS_FROM_NOW", allow_negative_numbers = true)]
    nbf: Option<i64>,
    /// `iat`, in Unix seconds; also the "now" that --expire and --nbf count from.
    #[arg(long, value_name = "UNIX")]
    iat: Option<u64>,
    /// A string header member `name=value` (repeatable), e.g. `typ=at+jwt`.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  meshguard token decode @testdata/istio-demo/demo.jwt
  meshguard token decode \"$TOKEN\"
  echo \"Authorization: Bearer $TOKEN\" | meshguard token decode
  meshguard token decode @token.jwt --output json

Decoding applies every format check the proxy applies (a malformed token is an error with
Envoy's message), but checks no signature, issuer, audience or time.")]
struct DecodeArgs {
    /// The token: the text itself, @FILE, or - for stdin (the default). A leading `Bearer `
    /// (or a whole `Authorization: Bearer ...` line) is removed.
    #[arg(value_name = "TOKEN")]
    token: Option<String>,
    /// Describe the times as seen at this Unix time instead of now.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Output format.
    #[arg(long, short = 'o', default_value = "text", value_name = "FORMAT")]
    output: OutputFormat,
}

/// Where `verify` gets its keys.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct VerifyKeys {
    /// A JWKS file, as in a RequestAuthentication's inline `jwks`.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// A JWKS URL, as in `jwksUri`: fetched once with the proxy's client and checks.
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// The public part of this private key (PEM, or a keygen HMAC secret file).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// An HMAC shared secret file (its bytes as they are, one trailing newline removed).
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Istio's demo token against Istio's demo JWKS
  meshguard token verify @testdata/istio-demo/demo.jwt --jwks testdata/istio-demo/jwks.json \\
      --issuer testing@secure.istio.io

  # As a provider with audiences would see it (a wrong audience is a 403)
  meshguard token verify @token.jwt --jwks jwks.json --audience bookstore.example.com

  # Against the issuer's published keys, at a fixed time
  meshguard token verify @token.jwt --jwks-uri https://issuer.example/keys --now 1700000000

The checks are the proxy's, in Envoy's order: format, issuer, time (60 s skew), audiences,
signature (key chosen by kid and alg). Exit status: 0 valid, 2 invalid (the status string, the
HTTP status meshguard would answer and the response_code_details are printed), 1 error.")]
struct VerifyArgs {
    /// The token: the text itself, @FILE, or - for stdin (the default). A leading `Bearer `
    /// (or a whole `Authorization: Bearer ...` line) is removed.
    #[arg(value_name = "TOKEN")]
    token: Option<String>,
    #[command(flatten)]
    keys: VerifyKeys,
    /// Required `iss`, as a jwtRule's `issuer` (default: any issuer).
    #[arg(long, value_name = "ISS")]
    issuer: Option<String>,
    /// An allowed audience, as a jwtRule's `audiences` (repeatable; default: any).
    #[arg(long = "audience", value_name = "AUD")]
    audiences: Vec<String>,
    /// Verify at this Unix time instead of now.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// With --jwks-uri: a PEM bundle of CA certificates trusted in addition to the system's.
    #[arg(long, value_name = "FILE", requires = "jwks_uri")]
    jwks_ca_file: Option<PathBuf>,
    /// With --jwks-uri: fetch timeout in seconds (a jwtRule's `timeout`).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout: u64,
    /// Output format.
    #[arg(long, short = 'o', default_value = "text", value_name = "FORMAT")]
    output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  meshguard token jwks --key testdata/istio-demo/key.pem
  meshguard token jwks --key key.pem --kid 2026-01 --alg PS256 > jwks.json

Only public members are printed. An HMAC key has no public part (its JWK is the secret), so
it is printed only with --allow-secret.")]
struct JwksArgs {
    #[command(flatten)]
    key: KeySource,
    /// The JWK's `kid` (default: the key's RFC 7638 thumbprint).
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// The JWK's `alg` (default: the key's default algorithm).
    #[arg(long, value_name = "ALG")]
    alg: Option<String>,
    /// HMAC only: print the `oct` JWK even though it contains the shared secret.
    #[arg(long)]
    allow_secret: bool,
}

/// Runs `token`; returns the exit code.
pub fn run(args: TokenArgs) -> Result<i32, CliError> {
    match args.command {
        TokenCommand::Keygen(a) => keygen(a),
        TokenCommand::Sign(a) => sign_cmd(a),
        TokenCommand::Decode(a) => decode(a),
        TokenCommand::Verify(a) => verify_cmd(a),
        TokenCommand::Jwks(a) => jwks_cmd(a),
    }
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Keys and algorithms

fn parse_alg(flag: &str, name: &str) -> Result<Algorithm, CliError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(usage(format!(
            "{flag} none is refused: an unsigned token is accepted by no Istio proxy"
        )));
    }
    Algorithm::from_name(name).ok_or_else(|| {
        let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        usage(format!(
            "{flag} {name:?} is not a supported algorithm (one of {})",
            all.join(", ")
        ))
    })
}

/// The algorithms a key of this kind can sign.
fn algorithms_for(kind: KeyKind) -> Vec<Algorithm> {
    match kind {
        KeyKind::Rsa(_) => Algorithm::RSA.to_vec(),
        KeyKind::EcP256 => vec![Algorithm::ES256],
        KeyKind::EcP384 => vec![Algorithm::ES384],
        KeyKind::EcP521 => vec![Algorithm::ES512],
        KeyKind::Ed25519 => vec![Algorithm::EdDSA],
        KeyKind::Hmac(_) => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    }
}

fn describe_kind(kind: KeyKind) -> String {
    match kind {
        KeyKind::Rsa(bits) => format!("RSA {bits}-bit"),
        KeyKind::EcP256 => "EC P-256".into(),
        KeyKind::EcP384 => "EC P-384".into(),
        KeyKind::EcP521 => "EC P-521".into(),
        KeyKind::Ed25519 => "Ed25519".into(),
        KeyKind::Hmac(bytes) => format!("HMAC {}-bit", bytes * 8),
    }
}

/// `alg` if this key can sign it, else a message naming what the key can do.
fn check_alg_fits(flag: &str, alg: Algorithm, kind: KeyKind) -> Result<(), CliError> {
    let fits = algorithms_for(kind);
    if fits.contains(&alg) {
        return Ok(());
    }
    let names: Vec<&str> = fits.iter().map(|a| a.as_str()).collect();
    Err(usage(format!(
        "{flag} {alg} cannot be used with an {} key (it signs {})",
        describe_kind(kind),
        names.join(", ")
    )))
}

/// Hash size in bits of an HMAC algorithm: RFC 7518 §3.2 asks for a key at least this long.
fn hmac_min_bits(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 384,
        Algorithm::HS512 => 512,
        _ => 256,
    }
}

/// Unpadded or padded base64url, as `keygen --type hmac` writes it.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Loads the key named by `--key` or `--hmac-secret-file`. Errors name the file and the
/// problem, never the contents.
fn load_key(key: Option<&Path>, hmac_secret_file: Option<&Path>) -> Result<SigningKey, CliError> {
    if let Some(path) = hmac_secret_file {
        let mut bytes = std::fs::read(path).map_err(|e| {
            usage(format!(
                "--hmac-secret-file {}: cannot read: {e}",
                path.display()
            ))
        })?;
        // `echo secret > file` adds a newline nobody means as part of the secret.
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(usage(format!(
                "--hmac-secret-file {}: the secret is empty",
                path.display()
            )));
        }
        return Ok(SigningKey::hmac(&bytes));
    }
    let Some(path) = key else {
        return Err(usage("give --key FILE or --hmac-secret-file FILE"));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--key {}: cannot read: {e}", path.display())))?;
    if text.contains("-----BEGIN") {
        return SigningKey::from_pem(&text).map_err(|e| {
            let hint = if text.contains("PUBLIC KEY") || text.contains("CERTIFICATE") {
                " (a public key or certificate cannot sign: give the private key)"
            } else {
                ""
            };
            usage(format!("--key {}: {e}{hint}", path.display()))
        });
    }
    let line = text.trim();
    match b64url_decode(line) {
        Some(secret) if !secret.is_empty() && !line.contains(char::is_whitespace) => {
            Ok(SigningKey::hmac(&secret))
        }
        _ => Err(usage(format!(
            "--key {}: no PEM private key, and not an HMAC secret as written by \
             `meshguard token keygen --type hmac` (for a raw secret use --hmac-secret-file)",
            path.display()
        ))),
    }
}

/// Warnings about keys that sign fine but that verifiers (meshguard included) may refuse.
fn warn_weak_key(key: &SigningKey, alg: Algorithm) {
    match key.kind() {
        KeyKind::Rsa(bits) if bits < 2048 => eprintln!(
            "warning: {bits}-bit RSA key: meshguard refuses RSA keys under 2048 bits when verifying"
        ),
        KeyKind::Hmac(bytes) if bytes * 8 < hmac_min_bits(alg) => eprintln!(
            "warning: a {}-bit secret is shorter than {alg} needs ({} bits, RFC 7518 §3.2); \
             some libraries refuse it",
            bytes * 8,
            hmac_min_bits(alg)
        ),
        _ => {}
    }
}

/// `{"keys":[jwk]}` with `kid` (default: thumbprint), `alg` and `use: sig`.
fn jwks_document(key: &SigningKey, kid: Option<&str>, alg: Algorithm) -> Value {
    let kid = kid.map_or_else(|| key.thumbprint(), str::to_owned);
    let mut jwk = key.public_jwk(Some(&kid));
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("alg".into(), json!(alg.as_str()));
        obj.insert("use".into(), json!("sig"));
    }
    json!({ "keys": [jwk] })
}

fn to_pretty(v: &Value) -> Result<String, CliError> {
    serde_json::to_string_pretty(v).map_err(|e| CliError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// keygen

/// The key kind and JWK `alg` for the flags; refuses combinations that make no sense.
fn keygen_kind(a: &KeygenArgs) -> Result<(KeyKind, Algorithm), CliError> {
    let alg = a
        .alg
        .as_deref()
        .map(|n| parse_alg("--alg", n))
        .transpose()?;
    let alg_type = alg.map(|alg| match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyType::Hmac,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => KeyType::Ec,
        Algorithm::EdDSA => KeyType::Ed25519,
        _ => KeyType::Rsa,
    });
    let ty = a.key_type.or(alg_type).unwrap_or(KeyType::Rsa);
    if let (Some(alg), Some(needed)) = (alg, alg_type)
        && needed != ty
    {
        return Err(usage(format!(
            "--alg {alg} needs a --type {} key",
            format!("{needed:?}").to_lowercase()
        )));
    }
    if a.curve.is_some() && ty != KeyType::Ec {
        return Err(usage("--curve is for --type ec"));
    }
    if a.bits.is_some() && !matches!(ty, KeyType::Rsa | KeyType::Hmac) {
        return Err(usage("--bits is for --type rsa and --type hmac"));
    }
    let kind = match ty {
        KeyType::Rsa => match a.bits.unwrap_or(2048) {
            bits @ (2048 | 3072 | 4096 | 8192) => KeyKind::Rsa(bits),
            bits if bits < 2048 => {
                return Err(usage(format!(
                    "--bits {bits}: RSA keys under 2048 bits are refused (meshguard does not \
                     accept them when verifying)"
                )));
            }
            bits => {
                return Err(usage(format!(
                    "--bits {bits}: RSA keys can be 2048, 3072, 4096 or 8192 bits"
                )));
            }
        },
        KeyType::Ec => {
            let from_alg = match alg {
                Some(Algorithm::ES384) => Some(Curve::P384),
                Some(Algorithm::ES512) => Some(Curve::P521),
                Some(_) => Some(Curve::P256),
                None => None,
            };
            let curve = a.curve.or(from_alg).unwrap_or(Curve::P256);
            if let (Some(alg), Some(want)) = (alg, from_alg)
                && want != curve
            {
                return Err(usage(format!(
                    "--alg {alg} needs --curve {}",
                    curve_name(want)
                )));
            }
            match curve {
                Curve::P256 => KeyKind::EcP256,
                Curve::P384 => KeyKind::EcP384,
                Curve::P521 => KeyKind::EcP521,
            }
        }
        KeyType::Ed25519 => KeyKind::Ed25519,
        KeyType::Hmac => {
            let min = hmac_min_bits(alg.unwrap_or(Algorithm::HS256));
            let bits = a.bits.unwrap_or(min);
            if !bits.is_multiple_of(8) || bits < min || bits > 8192 {
                return Err(usage(format!(
                    "--bits {bits}: an HMAC secret for {} takes a multiple of 8 bits from {min} \
                     to 8192 (RFC 7518 §3.2)",
                    alg.unwrap_or(Algorithm::HS256)
                )));
            }
            KeyKind::Hmac(bits / 8)
        }
    };
    let key_alg = match (alg, kind) {
        (Some(alg), _) => alg,
        (None, KeyKind::Rsa(_)) => Algorithm::RS256,
        (None, KeyKind::EcP256) => Algorithm::ES256,
        (None, KeyKind::EcP384) => Algorithm::ES384,
        (None, KeyKind::EcP521) => Algorithm::ES512,
        (None, KeyKind::Ed25519) => Algorithm::EdDSA,
        (None, KeyKind::Hmac(_)) => Algorithm::HS256,
    };
    Ok((kind, key_alg))
}

fn curve_name(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "P-256",
        Curve::P384 => "P-384",
        Curve::P521 => "P-521",
    }
}

/// Writes a private key file readable by its owner only (unix), refusing to replace an
/// existing file unless `force`.
fn write_private(path: &Path, text: &str, force: bool) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            usage(format!(
                "--out {}: already exists (pass --force to overwrite it)",
                path.display()
            ))
        } else {
            usage(format!("--out {}: cannot create: {e}", path.display()))
        }
    })?;
    // A file that existed keeps its old mode through `open`: tighten it before writing.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| usage(format!("--out {}: cannot chmod 0600: {e}", path.display())))?;
    }
    file.write_all(text.as_bytes())
        .map_err(|e| usage(format!("--out {}: cannot write: {e}", path.display())))
}

fn keygen(a: KeygenArgs) -> Result<i32, CliError> {
    let (kind, alg) = keygen_kind(&a)?;
    let key = SigningKey::generate(kind).map_err(|e| CliError::Internal(e.to_string()))?;
    let pem = key
        .to_pem()
        .map_err(|e| CliError::Internal(e.to_string()))?;
    let what = describe_kind(kind);
    match &a.out {
        Some(path) => {
            write_private(path, &pem, a.force)?;
            eprintln!(
                "wrote the private key ({what}) to {} (mode 0600)",
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    let kid = a.kid.clone().unwrap_or_else(|| key.thumbprint());
    if let Some(path) = &a.jwks {
        let doc = jwks_document(&key, Some(&kid), alg);
        std::fs::write(path, to_pretty(&doc)? + "\n")
            .map_err(|e| usage(format!("--jwks {}: cannot write: {e}", path.display())))?;
        eprintln!(
            "wrote its JWKS to {} (kid {kid}, alg {alg})",
            path.display()
        );
        if matches!(kind, KeyKind::Hmac(_)) {
            eprintln!(
                "note: an HMAC JWKS is the shared secret itself (kty oct): keep it as private \
                 as the key"
            );
        }
    } else {
        eprintln!("kid (RFC 7638 thumbprint): {kid}");
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// sign

/// `name=value` with a non-empty name.
fn split_pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str), CliError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(usage(format!("{flag} {s:?}: expected NAME=VALUE"))),
    }
}

/// Claims under construction, remembering which flag set each top-level name so that a claim
/// given twice is an error rather than a silent overwrite.
struct ClaimBuilder {
    claims: Map<String, Value>,
    set_by: BTreeMap<String, &'static str>,
}

impl ClaimBuilder {
    fn put(&mut self, name: &str, value: Value, flag: &'static str) -> Result<(), CliError> {
        if let Some(prev) = self.set_by.get(name) {
            return Err(usage(format!(
                "claim {name:?} is given twice ({prev} and {flag})"
            )));
        }
        self.set_by.insert(name.to_owned(), flag);
        self.claims.insert(name.to_owned(), value);
        Ok(())
    }

    /// `a.b.c=v`: objects are created on the way and shared between paths.
    fn put_nested(&mut self, path: &str, value: &str) -> Result<(), CliError> {
        const FLAG: &str = "--nested-claim";
        let parts: Vec<&str> = path.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(usage(format!(
                "{FLAG} {path:?}: expected a dotted path like nested.key1 (for a top-level \
                 claim use --claim)"
            )));
        }
        let top = parts[0];
        match self.set_by.get(top) {
            Some(&FLAG) => {}
            Some(prev) => {
                return Err(usage(format!(
                    "claim {top:?} is given twice ({prev} and {FLAG})"
                )));
            }
            None => {
                self.set_by.insert(top.to_owned(), FLAG);
                self.claims
                    .insert(top.to_owned(), Value::Object(Map::new()));
            }
        }
        let mut node = self
            .claims
            .get_mut(top)
            .ok_or_else(|| CliError::Internal("nested claim root vanished".into()))?;
        let (last, middle) = parts[1..]
            .split_last()
            .ok_or_else(|| CliError::Internal("empty nested path".into()))?;
        let clash = || {
            usage(format!(
                "{FLAG} {path:?}: a value already sits on this path"
            ))
        };
        for p in middle {
            let obj = node.as_object_mut().ok_or_else(clash)?;
            node = obj
                .entry((*p).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let obj = node.as_object_mut().ok_or_else(clash)?;
        if obj.contains_key(*last) {
            return Err(clash());
        }
        obj.insert((*last).to_owned(), Value::String(value.to_owned()));
        Ok(())
    }
}

fn offset(now: u64, secs: i64, flag: &str) -> Result<u64, CliError> {
    now.checked_add_signed(secs)
        .ok_or_else(|| usage(format!("{flag} {secs}: the time falls outside 0..2^64")))
}

fn build_claims(a: &SignArgs, now: u64) -> Result<Map<String, Value>, CliError> {
    let iss = a.iss.clone().unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
    let mut b = ClaimBuilder {
        claims: Map::new(),
        set_by: BTreeMap::new(),
    };
    // Defaults first, without an owner, so generic flags may replace them; dedicated flags
    // own their claim.
    let mut registered = |name: &str, value: Value, explicit: Option<&'static str>| {
        b.claims.insert(name.to_owned(), value);
        if let Some(flag) = explicit {
            b.set_by.insert(name.to_owned(), flag);
        }
    };
    registered("iss", json!(iss), a.iss.as_ref().map(|_| "--iss"));
    registered(
        "sub",
        json!(a.sub.clone().unwrap_or_else(|| iss.clone())),
        a.sub.as_ref().map(|_| "--sub"),
    );
    registered("iat", json!(now), a.iat.map(|_| "--iat"));
    if !a.no_exp {
        let exp = offset(now, a.expire.unwrap_or(DEFAULT_EXPIRE_SECS), "--expire")?;
        registered("exp", json!(exp), a.expire.map(|_| "--expire"));
    }
    if let Some(nbf) = a.nbf {
        registered("nbf", json!(offset(now, nbf, "--nbf")?), Some("--nbf"));
    }
    match a.aud.as_slice() {
        [] => {}
        [one] => registered("aud", json!(one), Some("--aud")),
        many => registered("aud", json!(many), Some("--aud")),
    }
    for c in &a.claims {
        let (k, v) = split_pair("--claim", c)?;
        b.put(k, json!(v), "--claim")?;
    }
    for c in &a.list_claims {
        let (k, v) = split_pair("--list-claim", c)?;
        let items: Vec<&str> = if v.is_empty() {
            Vec::new()
        } else {
            v.split(',').collect()
        };
        b.put(k, json!(items), "--list-claim")?;
    }
    for c in &a.json_claims {
        let (k, v) = split_pair("--json-claim", c)?;
        let value: Value = serde_json::from_str(v)
            .map_err(|e| usage(format!("--json-claim {k}: the value is not JSON: {e}")))?;
        b.put(k, value, "--json-claim")?;
    }
    for c in &a.nested_claims {
        let (k, v) = split_pair("--nested-claim", c)?;
        b.put_nested(k, v)?;
    }
    for name in &a.drop_claims {
        if let Some(flag) = b.set_by.get(name.as_str()) {
            return Err(usage(format!(
                "--drop-claim {name}: the claim is also set by {flag}"
            )));
        }
        b.claims.remove(name);
    }
    Ok(b.claims)
}

fn build_header(a: &SignArgs, key: &SigningKey) -> Result<Map<String, Value>, CliError> {
    let mut header = Map::new();
    header.insert("typ".into(), json!("JWT"));
    if !a.no_kid {
        let kid = a.kid.clone().unwrap_or_else(|| key.thumbprint());
        header.insert("kid".into(), json!(kid));
    }
    let mut seen = Vec::new();
    for h in &a.headers {
        let (k, v) = split_pair("--header", h)?;
        match k {
            "alg" => return Err(usage("--header alg=...: use --alg")),
            "kid" => return Err(usage("--header kid=...: use --kid or --no-kid")),
            _ if seen.contains(&k) => {
                return Err(usage(format!("--header {k}: given twice")));
            }
            _ => {}
        }
        seen.push(k);
        header.insert(k.to_owned(), json!(v));
    }
    Ok(header)
}

fn sign_cmd(a: SignArgs) -> Result<i32, CliError> {
    let key = load_key(a.key.key.as_deref(), a.key.hmac_secret_file.as_deref())?;
    let alg = match a.alg.as_deref() {
        Some(name) => parse_alg("--alg", name)?,
        None => key.default_algorithm(),
    };
    check_alg_fits("--alg", alg, key.kind())?;
    warn_weak_key(&key, alg);
    let now = a.iat.unwrap_or_else(now_unix);
    let claims = build_claims(&a, now)?;
    let header = build_header(&a, &key)?;
    let token = sign(alg, &key, &header, &claims).map_err(|e| usage(e.to_string()))?;
    println!("{token}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Reading tokens

/// `ascii_prefix` removed from `s`, ignoring ASCII case.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The token from the argument, a file or stdin, without `Authorization:` and `Bearer `.
fn read_token(arg: Option<&str>) -> Result<String, CliError> {
    let text = match arg {
        Some(file) if file.starts_with('@') => {
            let file = &file[1..];
            std::fs::read_to_string(file)
                .map_err(|e| usage(format!("@{file}: cannot read: {e}")))?
        }
        None | Some("-") => {
            let stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                return Err(usage("no token: give TOKEN, @FILE, or - to read stdin"));
            }
            let mut s = String::new();
            stdin
                .lock()
                .read_to_string(&mut s)
                .map_err(|e| usage(format!("stdin: cannot read: {e}")))?;
            s
        }
        Some(t) => t.to_owned(),
    };
    let t = text.trim();
    let t = strip_prefix_ci(t, "authorization:").map_or(t, str::trim_start);
    let t = strip_prefix_ci(t, "bearer ").map_or(t, str::trim_start);
    if t.is_empty() {
        return Err(usage("the token is empty"));
    }
    Ok(t.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Times, without a date crate

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day), proleptic
/// Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// RFC 3339 UTC, e.g. `2118-06-29T21:48:20Z`.
pub(crate) fn utc(unix: u64) -> String {
    // u64::MAX / 86400 fits in i64.
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX);
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A duration in its largest whole unit: `3 days`, `1 year`, `45 seconds`.
fn span(secs: u64) -> String {
    // A Gregorian year is 365.2425 days.
    const UNITS: [(u64, &str); 5] = [
        (31_556_952, "year"),
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    for (size, name) in UNITS {
        if secs >= size {
            let n = secs / size;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    "0 seconds".into()
}

/// How a time claim reads at `now`, with the 60 s skew the proxy applies.
fn relative(claim: &str, t: u64, now: u64) -> String {
    match claim {
        "exp" if t == 0 => "never expires: exp 0 means no expiry to Envoy".into(),
        "exp" if t < now && now - t <= SKEW_SECS => format!(
            "expired {} ago, still accepted within the 60 s clock skew",
            span(now - t)
        ),
        "exp" if t < now => format!("expired {} ago", span(now - t)),
        "nbf" if t > now && t - now <= SKEW_SECS => format!(
            "in {}, already accepted within the 60 s clock skew",
            span(t - now)
        ),
        "nbf" if t > now => format!("in {}: not valid yet", span(t - now)),
        _ if t > now => format!("in {}", span(t - now)),
        _ if t < now => format!("{} ago", span(now - t)),
        _ => "now".into(),
    }
}

/// The time claims present, in the order iat, nbf, exp.
fn time_claims(token: &Token) -> Vec<(&'static str, u64)> {
    let c = token.claims();
    [("iat", c.iat), ("nbf", c.nbf), ("exp", c.exp)]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// decode

fn status_error(status: Status) -> CliError {
    usage(format!("{} ({})", status.message(), status.name()))
}

fn decode(a: DecodeArgs) -> Result<i32, CliError> {
    let raw = read_token(a.token.as_deref())?;
    let token = Token::decode(&raw, &Limits::default()).map_err(status_error)?;
    let now = a.now.unwrap_or_else(now_unix);
    let times = time_claims(&token);
    let header = Value::Object(token.header().raw.clone());
    let claims = Value::Object(token.claims().payload.clone());
    match a.output {
        OutputFormat::Json => {
            let mut t = Map::new();
            for (name, unix) in &times {
                t.insert(
                    (*name).into(),
                    json!({"unix": unix, "utc": utc(*unix), "relative": relative(name, *unix, now)}),
                );
            }
            let doc = json!({
                "header": header,
                "claims": claims,
                "times": t,
                "signature_verified": false,
            });
            println!("{}", to_pretty(&doc)?);
        }
        OutputFormat::Text => {
            println!("header:\n{}", to_pretty(&header)?);
            println!("claims:\n{}", to_pretty(&claims)?);
            for (name, unix) in &times {
                println!("{name}: {} ({})", utc(*unix), relative(name, *unix, now));
            }
            println!(
                "signature NOT verified: decode only checks the format; use \
                 `meshguard token verify` to check the signature"
            );
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// verify

/// Fetches a JWKS once, with the proxy's fetcher (SSRF guard, size cap, `keys` required).
fn fetch_jwks(url: &str, ca: Option<PathBuf>, timeout: Duration) -> Result<Jwks, CliError> {
    meshguard_jwks::check_url(url).map_err(|e| usage(format!("--jwks-uri: {e}")))?;
    let rt = crate::proxy::runtime()?;
    rt.block_on(async {
        let settings = meshguard_jwks::JwksSettings {
            extra_ca: ca,
            ..Default::default()
        };
        let manager = meshguard_jwks::JwksManager::new(settings, Default::default())
            .map_err(|e| usage(format!("--jwks-ca-file: {e}")))?;
        let source = meshguard_jwks::RemoteKeySource::JwksUri(url.to_owned());
        let keys = manager
            .source(&source, timeout)
            .wait_first_fetch(timeout)
            .await;
        let reason = manager
            .status()
            .into_iter()
            .find_map(|s| s.last_error)
            .map(|e| e.message);
        manager.shutdown();
        keys.ok_or_else(|| {
            usage(format!(
                "fetching the JWKS from {url} failed: {}",
                reason.unwrap_or_else(|| format!("no answer within {} s", timeout.as_secs()))
            ))
        })
    })
}

/// Indexes of JWKs carrying private RSA/EC/OKP members: a JWKS should be public.
fn private_members(text: &str) -> Vec<usize> {
    const PRIVATE: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, k)| PRIVATE.iter().any(|m| k.get(*m).is_some()))
        .map(|(i, _)| i)
        .collect()
}

fn load_verify_keys(a: &VerifyArgs) -> Result<Jwks, CliError> {
    let k = &a.keys;
    let jwks = if let Some(path) = &k.jwks {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--jwks {}: cannot read: {e}", path.display())))?;
        for i in private_members(&text) {
            eprintln!(
                "warning: --jwks {}: key {i} holds private members (d, p, q, ...); a JWKS \
                 should hold public keys only",
                path.display()
            );
        }
        Jwks::parse(&text).map_err(|s| {
            usage(format!(
                "--jwks {}: {} ({})",
                path.display(),
                s.message(),
                s.name()
            ))
        })?
    } else if let Some(url) = &k.jwks_uri {
        fetch_jwks(
            url,
            a.jwks_ca_file.clone(),
            Duration::from_secs(a.timeout.max(1)),
        )?
    } else {
        let key = load_key(k.key.as_deref(), k.hmac_secret_file.as_deref())?;
        // No `alg` on this JWK: the key verifies every algorithm of its type.
        let doc = json!({ "keys": [key.public_jwk(None)] });
        Jwks::parse(&doc.to_string()).map_err(|s| CliError::Internal(s.to_string()))?
    };
    for s in jwks.skipped() {
        let kid = s
            .kid
            .as_deref()
            .map(|k| format!(" (kid {k})"))
            .unwrap_or_default();
        eprintln!(
            "note: JWKS key {}{kid} is not usable: {}",
            s.index, s.reason
        );
    }
    Ok(jwks)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "",
    }
}

/// Lines that say why a token failed, for the statuses where the token or keys can tell.
fn failure_context(
    status: Status,
    raw: &str,
    a: &VerifyArgs,
    jwks: &Jwks,
    now: u64,
) -> Vec<String> {
    let Ok(token) = Token::decode(raw, &Limits::default()) else {
        return Vec::new();
    };
    let c = token.claims();
    let h = token.header();
    match status {
        Status::JwtUnknownIssuer => vec![format!(
            "iss:      {} (--issuer is {:?})",
            c.iss
                .as_deref()
                .map_or_else(|| "none".to_owned(), |i| format!("{i:?}")),
            a.issuer.as_deref().unwrap_or_default()
        )],
        Status::JwtAudienceNotAllowed => vec![format!(
            "aud:      {} (allowed: {})",
            if c.aud.is_empty() {
                "none".to_owned()
            } else {
                c.aud.join(", ")
            },
            a.audiences.join(", ")
        )],
        Status::JwtExpired | Status::JwtNotYetValid => time_claims(&token)
            .into_iter()
            .filter(|(n, _)| *n != "iat")
            .map(|(n, t)| format!("{n}:      {} ({})", utc(t), relative(n, t, now)))
            .collect(),
        Status::JwksKidAlgMismatch | Status::JwtVerificationFail => {
            let keys: Vec<String> = jwks
                .keys()
                .iter()
                .map(|k| {
                    format!(
                        "{} kid {} alg {}",
                        k.kty(),
                        k.kid()
                            .map_or_else(|| "none".to_owned(), |k| format!("{k:?}")),
                        k.alg().map_or("any", Algorithm::as_str)
                    )
                })
                .collect();
            vec![
                format!(
                    "token:    alg {}, kid {}",
                    h.alg,
                    h.kid
                        .as_deref()
                        .map_or_else(|| "none".to_owned(), |k| format!("{k:?}"))
                ),
                format!("keys:     {}", keys.join("; ")),
            ]
        }
        _ => Vec::new(),
    }
}

fn verify_cmd(a: VerifyArgs) -> Result<i32, CliError> {
    let raw = read_token(a.token.as_deref())?;
    let jwks = load_verify_keys(&a)?;
    let validation = Validation {
        issuer: a.issuer.clone(),
        audiences: a.audiences.clone(),
        ..Validation::default()
    };
    let now = a.now.unwrap_or_else(now_unix);
    let result = verify(&raw, &validation, &jwks, now);
    match (&result, a.output) {
        (Ok(token), OutputFormat::Json) => {
            let c = token.claims();
            let doc = json!({
                "valid": true,
                "status": null,
                "message": null,
                "http_status": null,
                "response_code_details": null,
                "iss": c.iss,
                "sub": c.sub,
                "kid": token.header().kid,
                "alg": token.header().alg.as_str(),
            });
            println!("{}", to_pretty(&doc)?);
        }
        (Ok(token), OutputFormat::Text) => {
            let c = token.claims();
            let none = || "(none)".to_owned();
            println!("valid");
            println!("  iss:       {}", c.iss.clone().unwrap_or_else(none));
            println!("  sub:       {}", c.sub.clone().unwrap_or_else(none));
            // The request principal Istio matches in `requestPrincipals`: only when both exist.
            match (&c.iss, &c.sub) {
                (Some(i), Some(s)) => println!("  principal: {i}/{s}"),
                _ => println!("  principal: (none: the token lacks iss or sub)"),
            }
            println!(
                "  kid:       {}",
                token.header().kid.clone().unwrap_or_else(none)
            );
            println!("  alg:       {}", token.header().alg);
            if !c.aud.is_empty() {
                println!("  aud:       {}", c.aud.join(", "));
            }
            for (name, t) in time_claims(token) {
                println!("  {name}:       {} ({})", utc(t), relative(name, t, now));
            }
        }
        (Err(s), OutputFormat::Json) => {
            let decoded = Token::decode(&raw, &Limits::default()).ok();
            let doc = json!({
                "valid": false,
                "status": s.name(),
                "message": s.message(),
                "http_status": s.http_status(),
                "response_code_details": s.details(),
                "iss": decoded.as_ref().and_then(|t| t.claims().iss.clone()),
                "sub": decoded.as_ref().and_then(|t| t.claims().sub.clone()),
                "kid": decoded.as_ref().and_then(|t| t.header().kid.clone()),
                "alg": decoded.as_ref().map(|t| t.header().alg.as_str()),
            });
            println!("{}", to_pretty(&doc)?);
        }
        (Err(s), OutputFormat::Text) => {
            println!("invalid: {}", s.message());
            println!("  status:   {}", s.name());
            println!(
                "  http:     {} {}",
                s.http_status(),
                reason_phrase(s.http_status())
            );
            println!("  details:  {}", s.details());
            for line in failure_context(*s, &raw, &a, &jwks, now) {
                println!("  {line}");
            }
        }
    }
    Ok(if result.is_ok() { 0 } else { 2 })
}

// ---------------------------------------------------------------------------------------------
// jwks

fn jwks_cmd(a: JwksArgs) -> Result<i32, CliError> {
    let key = load_key(a.key.key.as_deref(), a.key.hmac_secret_file.as_deref())?;
    let alg = match a.alg.as_deref() {
        Some(name) => parse_alg("--alg", name)?,
        None => key.default_algorithm(),
    };
    check_alg_fits("--alg", alg, key.kind())?;
    if matches!(key.kind(), KeyKind::Hmac(_)) && !a.allow_secret {
        return Err(usage(
            "an HMAC key has no public part: its JWK (kty oct) is the shared secret itself; \
             pass --allow-secret to print it anyway",
        ));
    }
    let doc = jwks_document(&key, a.kid.as_deref(), alg);
    println!("{}", to_pretty(&doc)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_532_389_700), "2018-07-23T23:48:20Z");
        assert_eq!(utc(4_685_989_700), "2118-06-29T23:48:20Z");
        assert_eq!(utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Every day of 1600..2400 follows the previous one.
        let mut prev = civil_from_days(-135_140);
        for d in -135_139..157_000 {
            let (y, m, dd) = civil_from_days(d);
            let next_in_month = (y, m, dd) == (prev.0, prev.1, prev.2 + 1);
            let next_month =
                dd == 1 && ((y, m) == (prev.0, prev.1 + 1) || (y, m) == (prev.0 + 1, 1));
            assert!(
                next_in_month || next_month,
                "{d}: {prev:?} -> {:?}",
                (y, m, dd)
            );
            prev = (y, m, dd);
        }
    }

    #[test]
    fn spans_and_relative_times() {
        assert_eq!(span(0), "0 seconds");
        assert_eq!(span(1), "1 second");
        assert_eq!(span(3 * 86_400 + 5), "3 days");
        assert_eq!(span(31_556_952 * 91 + 10), "91 years");
        assert_eq!(relative("exp", 100, 400), "expired 5 minutes ago");
        assert_eq!(
            relative("exp", 100, 130),
            "expired 30 seconds ago, still accepted within the 60 s clock skew"
        );
        assert_eq!(relative("exp", 500, 400), "in 1 minute");
        assert_eq!(
            relative("exp", 0, 400),
            "never expires: exp 0 means no expiry to Envoy"
        );
        assert_eq!(relative("nbf", 7600, 400), "in 2 hours: not valid yet");
        assert_eq!(relative("iat", 400, 400), "now");
    }

    #[test]
    fn base64url() {
        assert_eq!(b64url_decode("").unwrap(), b"");
        assert_eq!(b64url_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(b64url_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(b64url_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(b64url_decode("_-8").unwrap(), [0xff, 0xef]);
        assert!(b64url_decode("Zm9vY").is_none());
        assert!(b64url_decode("Zm9v+g").is_none());
    }

    #[test]
    fn bearer_prefixes_are_removed() {
        for input in [
            "abc.def.ghi",
            "Bearer abc.def.ghi",
            "bearer  abc.def.ghi\n",
            "Authorization: Bearer abc.def.ghi",
        ] {
            assert_eq!(read_token(Some(input)).unwrap(), "abc.def.ghi", "{input:?}");
        }
    }
}
