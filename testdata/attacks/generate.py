#!/usr/bin/env python3
"""Generates the JWT attack vectors that crates/cli/tests/jwt_attacks.rs sends through the
real proxy.

Only the `cryptography` library (plus the standard library's hmac, hashlib and base64) is
used: every token is assembled byte by byte, so no JWT library's opinion leaks into the
vectors. Everything is deterministic (fixed keys, RFC 6979 ECDSA, PSS with a fixed salt),
so running the script again reproduces the committed files byte for byte.

Writes, next to this script:
  cases.json   the cases: name, class, how the token is sent, expected status and body,
               and the decision (docs/decisions.md or Envoy behaviour) that justifies the answer
  jwks.json    the public JWKS the proxy is configured with
  policy.yaml  the RequestAuthentication + AuthorizationPolicy the test loads

Keys: Istio's demo RSA key (testdata/istio-demo/key.pem), an EC P-256 and an Ed25519 key
derived from fixed labels, and attacker keys (RSA, EC) derived the same way.

    python3 testdata/attacks/generate.py
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import random

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

ISS = "testing@secure.istio.io"  # provider 1: Istio's demo issuer, no audiences
AUD_ISS = "https://aud.meshguard.test"  # provider 2: audiences configured
AUD = "svc.meshguard.test"
IAT = 1700000000
EXP = 4102444800  # 2100-01-01
PAST = 1000000000  # 2001-09-09

RSA_KID = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"  # Istio's demo key, no alg
RSA_RS256_KID = "mg-rsa-rs256-only"  # the same RSA key again, with "alg": "RS256"
EC_KID = "mg-ec-p256"  # no alg
ED_KID = "mg-ed25519"  # "alg": "EdDSA"

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


# ---------------------------------------------------------------------------------------
# Encoding helpers


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_padded(data):
    return base64.urlsafe_b64encode(data).decode()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def as_bytes(part):
    """A header or payload given as a dict (compact JSON), str (exact JSON text) or bytes."""
    if isinstance(part, dict):
        return compact(part).encode()
    if isinstance(part, str):
        return part.encode()
    return part


def label_bytes(label, n=32):
    return hashlib.shake_256(("meshguard attack suite: " + label).encode()).digest(n)


# ---------------------------------------------------------------------------------------
# Keys


def load_rsa():
    with open(os.path.join(ROOT, "testdata", "istio-demo", "key.pem"), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def derive_ec(label):
    d = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def derive_ed(label):
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _is_probable_prime(n, rng):
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(40):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def derive_rsa(label, bits=2048):
    """A 2048-bit RSA key whose primes come from a PRNG seeded with `label`."""
    rng = random.Random(label)
    e = 65537
    while True:
        primes = []
        while len(primes) < 2:
            c = rng.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if (c - 1) % e != 0 and _is_probable_prime(c, rng):
                primes.append(c)
        p, q = primes
        n = p * q
        if p != q and n.bit_length() == bits:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    pub = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), pub
    ).private_key()


def rsa_jwk(key, kid, **extra):
    n = key.public_key().public_numbers()
    jwk = {
        "e": b64u(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")),
        "kid": kid,
        "kty": "RSA",
        "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
    }
    jwk.update(extra)
    return jwk


def ec_point(key):
    n = key.public_key().public_numbers()
    return n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big")


def ec_jwk(key, kid, **extra):
    x, y = ec_point(key)
    jwk = {"crv": "P-256", "kid": kid, "kty": "EC", "x": b64u(x), "y": b64u(y)}
    jwk.update(extra)
    return jwk


def ed_raw(key):
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def ed_jwk(key, kid, **extra):
    jwk = {"crv": "Ed25519", "kid": kid, "kty": "OKP", "x": b64u(ed_raw(key))}
    jwk.update(extra)
    return jwk


RSA = load_rsa()
EC = derive_ec("meshguard attack suite: EC P-256 key")
ED = derive_ed("meshguard attack suite: Ed25519 key")
ATTACKER_RSA = derive_rsa("meshguard attack suite: attacker RSA key")
ATTACKER_EC = derive_ec("meshguard attack suite: attacker EC P-256 key")

RSA_PUBLIC_JWK = rsa_jwk(RSA, RSA_KID)
JWKS = {
    "keys": [
        RSA_PUBLIC_JWK,
        rsa_jwk(RSA, RSA_RS256_KID, alg="RS256", use="sig"),
        ec_jwk(EC, EC_KID),
        ed_jwk(ED, ED_KID, alg="EdDSA", use="sig"),
    ]
}


# ---------------------------------------------------------------------------------------
# Signing (all deterministic)


def mgf1(seed, length, hfn):
    out = b""
    counter = 0
    while len(out) < length:
        out += hfn(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def pss_sign(key, message, bits):
    """RSASSA-PSS with MGF1 and salt length = hash length (JWA), with a fixed salt."""
    hfn = HASHLIB[bits]
    h_len = hfn().digest_size
    numbers = key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    mod_bits = n.bit_length()
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    salt = label_bytes("PSS salt " + bits, h_len)
    m_hash = hfn(message).digest()
    h = hfn(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_len - len(salt) - h_len - 2) + b"\x01" + salt
    masked = bytes(a ^ b for a, b in zip(db, mgf1(h, em_len - h_len - 1, hfn)))
    masked = bytes([masked[0] & (0xFF >> (8 * em_len - em_bits))]) + masked[1:]
    em = int.from_bytes(masked + h + b"\xbc", "big")
    sig = pow(em, d, n).to_bytes((mod_bits + 7) // 8, "big")
    key.public_key().verify(
        sig,
        message,
        padding.PSS(mgf=padding.MGF1(HASHES[bits]()), salt_length=h_len),
        HASHES[bits](),
    )
    return sig


def es256_rs(key, message):
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return decode_dss_signature(der), der


def sign(alg, key, message):
    family, bits = alg[:2], alg[2:]
    if family == "HS":
        return hmac.new(key, message, HASHLIB[bits]).digest()
    if family == "RS":
        return key.sign(message, padding.PKCS1v15(), HASHES[bits]())
    if family == "PS":
        return pss_sign(key, message, bits)
    if alg == "ES256":
        (r, s), _ = es256_rs(key, message)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg in ("EdDSA", "Ed25519"):
        return key.sign(message)
    raise ValueError(alg)


def segments(header, payload):
    return b64u(as_bytes(header)), b64u(as_bytes(payload))


def token(header, payload, alg=None, key=None, sig=None):
    """Compact token over exactly these header and payload bytes. `alg`/`key` sign it;
    `sig` (bytes) is used as is instead."""
    h, p = segments(header, payload)
    if sig is None:
        sig = sign(alg, key, f"{h}.{p}".encode())
    return f"{h}.{p}.{b64u(sig)}"


def sign_segments(h, p, alg, key):
    """Signs the segments exactly as they will be transmitted."""
    return b64u(sign(alg, key, f"{h}.{p}".encode()))


def claims(**over):
    c = {"iss": ISS, "sub": "attack-suite", "iat": IAT, "exp": EXP}
    for k, v in over.items():
        if v is DROP:
            c.pop(k, None)
        else:
            c[k] = v
    return c


DROP = object()


def hdr(alg, kid=RSA_KID, **extra):
    h = {"alg": alg}
    if kid is not None:
        h["kid"] = kid
    h.update(extra)
    return h


def rs256(payload=None, **hextra):
    return token(hdr("RS256", **hextra), payload or claims(), "RS256", RSA)


def raw_claims_json(extra_members):
    """Claims as exact JSON text with `extra_members` (raw JSON) appended."""
    return '{"iss":"%s","sub":"attack-suite","iat":%d,"exp":%d%s}' % (
        ISS,
        IAT,
        EXP,
        extra_members,
    )


# ---------------------------------------------------------------------------------------
# Expected outcomes: Envoy's status strings (jwt_verify_lib status.cc) and meshguard's own
# two (JwtHeaderUnsupportedCrit, JwtTooLarge).

S = {
    "JwtBadFormat": "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    "JwtHeaderParseErrorBadBase64": "Jwt header is an invalid Base64url encoded",
    "JwtHeaderParseErrorBadJson": "Jwt header is an invalid JSON",
    "JwtHeaderBadAlg": "Jwt header [alg] field is required and must be a string",
    "JwtHeaderNotImplementedAlg": "Jwt header [alg] is not supported",
    "JwtHeaderBadKid": "Jwt header [kid] field is not a string",
    "JwtPayloadParseErrorBadBase64": "Jwt payload is an invalid Base64url encoded",
    "JwtPayloadParseErrorBadJson": "Jwt payload is an invalid JSON",
    "JwtPayloadParseErrorIssNotString": "Jwt payload [iss] field is not a string",
    "JwtPayloadParseErrorSubNotString": "Jwt payload [sub] field is not a string",
    "JwtPayloadParseErrorIatNotInteger": "Jwt payload [iat] field is not an integer",
    "JwtPayloadParseErrorIatOutOfRange": "Jwt payload [iat] field is not a positive 64 bit integer",
    "JwtPayloadParseErrorNbfNotInteger": "Jwt payload [nbf] field is not an integer",
    "JwtPayloadParseErrorNbfOutOfRange": "Jwt payload [nbf] field is not a positive 64 bit integer",
    "JwtPayloadParseErrorExpNotInteger": "Jwt payload [exp] field is not an integer",
    "JwtPayloadParseErrorExpOutOfRange": "Jwt payload [exp] field is not a positive 64 bit integer",
    "JwtPayloadParseErrorJtiNotString": "Jwt payload [jti] field is not a string",
    "JwtPayloadParseErrorAudNotString": "Jwt payload [aud] field is not a string or string list",
    "JwtSignatureParseErrorBadBase64": "Jwt signature is an invalid Base64url encoded",
    "JwtEd25519SignatureWrongLength": "Jwt ED25519 signature is wrong length",
    "JwtUnknownIssuer": "Jwt issuer is not configured",
    "JwtVerificationFail": "Jwt verification fails",
    "JwksKidAlgMismatch": "Jwks doesn't have key to match kid or alg from Jwt",
    "JwtExpired": "Jwt is expired",
    "JwtNotYetValid": "Jwt not yet valid",
    "JwtHeaderUnsupportedCrit": "Jwt header [crit] lists an extension that is not supported",
    "JwtTooLarge": "Jwt is too large",
    "JwtMultipleTokens": "Found multiple Jwt tokens",
}


def outcome(expect):
    if expect == "OK":
        return 200, None
    if expect == "RBAC":
        return 403, "RBAC: access denied"
    if expect == "JwtAudienceNotAllowed":
        return 403, "Audiences in Jwt are not allowed"
    if expect == "431":
        return 431, ""
    return 401, S[expect]


# Decisions, cited by the cases.
D2_SEGMENTS = "docs/decisions.md, decision 2: empty segments are rejected (Envoy splits with SkipEmpty and would accept h.p.s. and .h.p.s); JwtBadFormat"
D2_B64 = "docs/decisions.md, decision 2: characters outside base64url, '=' padding and non-zero trailing bits are rejected (Envoy's absl decoder accepts padding); the section's ...invalid Base64url encoded status"
D2_DUP = "docs/decisions.md, decision 2: duplicate JSON member names are rejected (RFC 7515 §5.2 / RFC 7519 §4 allow it; last-wins would let one signed token mean two things)"
D2_CRIT = "docs/decisions.md, decision 2: no JWS extension is implemented, so any crit is rejected (RFC 7515 §4.1.11; Envoy ignores crit); meshguard-only status JwtHeaderUnsupportedCrit"
D2_MULTI = "docs/decisions.md, decision 2: a token location present twice is rejected with 401 Found multiple Jwt tokens (Envoy joins the headers and takes the first token)"
D2_SIZE = "docs/decisions.md, decision 2: token size is bounded (16 KiB, meshguard-only status JwtTooLarge)"
D2_DEPTH = "docs/decisions.md, decision 2: JSON depth is bounded (32 levels); deeper JSON is an invalid JSON document"
ENVOY_ALG = "Envoy jwt_verify_lib: alg must be one of its 13 names (none is not one) -> JwtHeaderNotImplementedAlg"
ENVOY_BADALG = "Envoy jwt_verify_lib: alg missing or not a string -> JwtHeaderBadAlg"
ENVOY_KTY = "Envoy key selection: a key of the wrong type for the token's alg never verifies; kid (and alg) matched a key, so JwtVerificationFail"
ENVOY_KID = "Envoy key selection: no JWK has this kid (or a JWK alg differs from the token's) -> JwksKidAlgMismatch; kid is only compared, never used as a path, URL or query"
ENVOY_BADKID = "Envoy jwt_verify_lib: kid present but not a string -> JwtHeaderBadKid"
ENVOY_SIG = "Envoy: the signature does not verify with any matching key -> JwtVerificationFail"
ENVOY_HEADER_KEYS = "Envoy ignores jwk/jku/x5u/x5c in the header: keys come only from the configured JWKS, so the attacker's signature fails -> JwtVerificationFail"
ENVOY_TIME_TYPE = "Envoy jwt_verify_lib GetUInt64: iat/nbf/exp must be JSON numbers (NotInteger), >= 0 and < 2^64 (OutOfRange)"
ENVOY_TIME = "Envoy verifyTimeConstraint with 60 s skew: nbf in the future -> JwtNotYetValid; exp in the past -> JwtExpired"
ENVOY_ISS_TYPE = "Envoy jwt_verify_lib: iss must be a string -> JwtPayloadParseErrorIssNotString"
ENVOY_ISS = "Envoy: the token's iss is compared exactly with each provider's issuer; no match -> 401 Jwt issuer is not configured"
ENVOY_AUD_TYPE = "Envoy jwt_verify_lib: aud must be a string or a list of strings -> JwtPayloadParseErrorAudNotString"
ENVOY_AUD = "Envoy CheckAudience: no token audience is allowed -> 403 Audiences in Jwt are not allowed (the only 403 from JWT validation)"
ENVOY_NOT_OBJECT = "Envoy jwt_verify_lib: the payload must be a JSON object -> JwtPayloadParseErrorBadJson"
ENVOY_OK = "valid token from a configured key: 200 from the echo upstream; the Authorization header is removed (forwardOriginalToken: false)"


CASES = []


def add(name, cls, expect, decision, token_=None, location="header", header_lines=None,
        query=None, tokens=None, attack=True, note=None):
    assert not any(c["name"] == name for c in CASES), name
    status, body = outcome(expect)
    if attack:
        assert status != 200, name
    c = {"name": name, "class": cls, "attack": attack}
    if token_ is not None:
        c["token"] = token_
        c["location"] = location
    if header_lines is not None:
        c["header_lines"] = header_lines
    if query is not None:
        c["query"] = query
    if tokens is not None:
        c["tokens"] = tokens
    c["expect_status"] = status
    c["expect_body"] = body
    c["decision"] = decision
    if note:
        c["note"] = note
    CASES.append(c)


# ---------------------------------------------------------------------------------------
# The cases


def valid_controls():
    cls = "valid controls"
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        add(f"valid-{alg.lower()}", cls, "OK", ENVOY_OK,
            token(hdr(alg), claims(), alg, RSA), attack=False)
    add("valid-es256", cls, "OK", ENVOY_OK,
        token(hdr("ES256", EC_KID), claims(), "ES256", EC), attack=False)
    add("valid-eddsa", cls, "OK", ENVOY_OK,
        token(hdr("EdDSA", ED_KID), claims(), "EdDSA", ED), attack=False)
    add("valid-ed25519-alg-alias", cls, "OK",
        "docs/decisions.md, decision 2: Ed25519 is accepted as an alias of EdDSA (RFC 9864), also against a JWK with alg EdDSA",
        token(hdr("Ed25519", ED_KID), claims(), "Ed25519", ED), attack=False)
    add("valid-rs256-no-kid", cls, "OK",
        "Envoy: no kid means every key of the right type is tried",
        token(hdr("RS256", None), claims(), "RS256", RSA), attack=False)
    add("valid-es256-no-kid", cls, "OK",
        "Envoy: no kid means every key of the right type is tried",
        token(hdr("ES256", None), claims(), "ES256", EC), attack=False)
    add("valid-rs256-jwk-alg-rs256", cls, "OK", ENVOY_OK,
        token(hdr("RS256", RSA_RS256_KID), claims(), "RS256", RSA), attack=False)
    add("valid-typ-jwt", cls, "OK", "typ is not checked (Envoy ignores it)",
        rs256(typ="JWT"), attack=False)
    add("valid-kid-empty-string", cls, "OK",
        "Envoy: an empty kid selects like no kid; the signature is the real key's",
        token(hdr("RS256", ""), claims(), "RS256", RSA), attack=False)
    add("valid-audience", cls, "OK", ENVOY_OK,
        rs256(claims(iss=AUD_ISS, aud=AUD)), attack=False)
    add("valid-audience-in-list", cls, "OK",
        "Envoy CheckAudience: one allowed audience in the list is enough",
        rs256(claims(iss=AUD_ISS, aud=["other.test", AUD])), attack=False)
    add("valid-audience-sanitized", cls, "OK",
        "Envoy sanitizeAudience: one leading https:// and one trailing / are ignored",
        rs256(claims(iss=AUD_ISS, aud="https://" + AUD + "/")), attack=False)
    add("valid-in-access-token-param", cls, "OK",
        "Istio default locations: Authorization: Bearer and the access_token query parameter",
        rs256(), location="query", attack=False)
    add("valid-exp-missing", cls, "OK", "docs/decisions.md, decision 2 / Envoy: a missing exp is accepted",
        rs256(claims(exp=DROP)), attack=False)
    add("valid-exp-fraction-truncated", cls, "OK",
        "docs/decisions.md, decision 2 / Envoy: fractional exp is truncated",
        rs256(claims(exp=EXP + 0.75)), attack=False)
    add("valid-exp-zero", cls, "OK",
        "Envoy verifyTimeConstraint: exp 0 means no expiry (only an issuer can sign it)",
        rs256(claims(exp=0)), attack=False)
    add("valid-iat-future", cls, "OK", "Envoy never checks iat against the clock",
        rs256(claims(iat=EXP)), attack=False)
    add("valid-nbf-past", cls, "OK", ENVOY_TIME, rs256(claims(nbf=IAT)), attack=False)
    add("valid-header-jku-ignored", cls, "OK",
        "Envoy ignores jku/x5u in the header; the token is signed by the configured key",
        rs256(jku="https://attacker.example/jwks.json", x5u="https://attacker.example/cert.pem"),
        attack=False)
    add("valid-crit-claim-in-payload", cls, "OK",
        "crit is a header parameter; a payload member of that name is just a claim",
        rs256(claims(crit=["exp"])), attack=False)
    add("valid-json-depth-32", cls, "OK", D2_DEPTH + " (the payload object itself is level 1)",
        rs256(claims(nest=nested(31))), attack=False)
    add("valid-exactly-16-kib", cls, "OK", D2_SIZE + " (16384 bytes is the largest accepted)",
        sized_token(16 * 1024), attack=False)
    h, p = segments(hdr("ES256", EC_KID), claims(sub="high-s"))
    (r, s), _ = es256_rs(EC, f"{h}.{p}".encode())
    high_s = r.to_bytes(32, "big") + (P256_N - s).to_bytes(32, "big")
    add("valid-es256-high-s", cls, "OK",
        "ECDSA (r, n-s) is mathematically valid; JWS does not require low-S and BoringSSL (Envoy) accepts it. Not a forgery: only the key holder can produce (r, s)",
        f"{h}.{p}.{b64u(high_s)}", attack=False)
    add("no-token-denied-by-policy", cls, "RBAC",
        "RequestAuthentication alone lets a request without a token through; the AuthorizationPolicy requestPrincipals [*] then denies it (403, Envoy RBAC body)",
        header_lines=[], attack=False)
    add("valid-token-without-sub", cls, "RBAC",
        "a verified token without sub has no request principal (iss/sub), so requestPrincipals [*] does not match: 403",
        rs256(claims(sub=DROP)), attack=False)


def alg_none():
    cls = "alg none"
    body = claims(sub="admin")
    real_sig = sign("RS256", RSA, b"unrelated")
    spellings = [
        ("none", "none"), ("None", "None"), ("NONE", "NONE"), ("nOnE", "nOnE"),
        ("empty", ""),
    ]
    for label, alg in spellings:
        h = hdr(alg)
        add(f"alg-{label}-empty-signature", cls, "JwtBadFormat", D2_SEGMENTS,
            token(h, body, sig=b""))
        add(f"alg-{label}-with-signature", cls, "JwtHeaderNotImplementedAlg", ENVOY_ALG,
            token(h, body, sig=real_sig))
    for label, hobj in [
        ("missing", {"kid": RSA_KID}),
        ("null", {"alg": None, "kid": RSA_KID}),
        ("number", {"alg": 0, "kid": RSA_KID}),
        ("list", {"alg": ["none"], "kid": RSA_KID}),
        ("object", {"alg": {"name": "RS256"}, "kid": RSA_KID}),
        ("bool", {"alg": False, "kid": RSA_KID}),
    ]:
        add(f"alg-{label}-empty-signature", cls, "JwtBadFormat", D2_SEGMENTS,
            token(hobj, body, sig=b""))
        add(f"alg-{label}-with-signature", cls, "JwtHeaderBadAlg", ENVOY_BADALG,
            token(hobj, body, sig=real_sig))
    h, p = segments(hdr("none"), body)
    add("alg-none-two-segments", cls, "JwtBadFormat", D2_SEGMENTS, f"{h}.{p}")
    # A real RS256 token whose header is swapped for alg none: the signature is valid
    # over the original header only.
    good = rs256(body)
    h_none = b64u(as_bytes(hdr("none")))
    add("alg-none-header-swapped-into-valid-token", cls, "JwtHeaderNotImplementedAlg",
        ENVOY_ALG, h_none + good[good.index("."):])
    for alg in ("rs256", "RS256 ", "ES256K", "Ed448", "HS1", "RSA-OAEP", "dir"):
        add(f"alg-unsupported-{alg.strip().lower()}{'-space' if alg.endswith(' ') else ''}",
            cls, "JwtHeaderNotImplementedAlg", ENVOY_ALG,
            token(hdr(alg), body, sig=real_sig))


def hmac_confusion():
    cls = "HMAC key confusion"
    pub = RSA.public_key()
    spki_pem = pub.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    spki_der = pub.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1_der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    n_bytes = pub.public_numbers().n.to_bytes(256, "big")
    with open(os.path.join(ROOT, "testdata", "istio-demo", "jwks.json"), "rb") as f:
        istio_jwks_file = f.read()
    secrets = [
        ("spki-pem", spki_pem),
        ("spki-pem-no-newline", spki_pem.rstrip(b"\n")),
        ("pkcs1-pem", pkcs1_pem),
        ("pkcs1-pem-no-newline", pkcs1_pem.rstrip(b"\n")),
        ("spki-der", spki_der),
        ("pkcs1-der", pkcs1_der),
        ("jwk-json", compact(RSA_PUBLIC_JWK).encode()),
        ("jwk-json-spaced", json.dumps(RSA_PUBLIC_JWK).encode()),
        ("jwks-file", istio_jwks_file),
        ("jwks-file-no-newline", istio_jwks_file.rstrip(b"\n")),
        ("n-bytes", n_bytes),
        ("n-base64url", RSA_PUBLIC_JWK["n"].encode()),
    ]
    for alg in ("HS256", "HS384", "HS512"):
        for label, secret in secrets:
            add(f"{alg.lower()}-rsa-{label}", cls, "JwtVerificationFail", ENVOY_KTY,
                token(hdr(alg), claims(sub="admin"), alg, secret))
    add("hs256-rsa-spki-pem-no-kid", cls, "JwtVerificationFail",
        ENVOY_KTY + " (no kid: every key without a conflicting alg is tried)",
        token(hdr("HS256", None), claims(sub="admin"), "HS256", spki_pem))
    add("hs256-rsa-spki-pem-kid-of-rs256-only-jwk", cls, "JwksKidAlgMismatch",
        ENVOY_KID + " (the JWK declares alg RS256)",
        token(hdr("HS256", RSA_RS256_KID), claims(sub="admin"), "HS256", spki_pem))
    x, y = ec_point(EC)
    ec_spki = EC.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for label, secret in [("uncompressed-point", b"\x04" + x + y), ("spki-pem", ec_spki),
                          ("jwk-json", compact(JWKS["keys"][2]).encode())]:
        add(f"hs256-ec-{label}", cls, "JwtVerificationFail", ENVOY_KTY,
            token(hdr("HS256", EC_KID), claims(sub="admin"), "HS256", secret))
    add("hs256-ed25519-raw-key", cls, "JwksKidAlgMismatch",
        ENVOY_KID + " (the Ed25519 JWK declares alg EdDSA)",
        token(hdr("HS256", ED_KID), claims(sub="admin"), "HS256", ed_raw(ED)))
    add("hs256-empty-secret", cls, "JwtVerificationFail", ENVOY_KTY,
        token(hdr("HS256"), claims(sub="admin"), "HS256", b""))


def cross_family():
    cls = "cross-family and RS/PS swaps"
    body = claims(sub="admin")
    add("es256-kid-of-rsa-key", cls, "JwtVerificationFail", ENVOY_KTY,
        token(hdr("ES256", RSA_KID), body, "ES256", EC))
    add("es256-attacker-key-kid-of-rsa-key", cls, "JwtVerificationFail", ENVOY_KTY,
        token(hdr("ES256", RSA_KID), body, "ES256", ATTACKER_EC))
    add("eddsa-kid-of-rsa-key", cls, "JwtVerificationFail", ENVOY_KTY,
        token(hdr("EdDSA", RSA_KID), body, "EdDSA", ED))
    add("rs256-kid-of-ec-key", cls, "JwtVerificationFail", ENVOY_KTY,
        token(hdr("RS256", EC_KID), body, "RS256", RSA))
    add("rs256-kid-of-ed25519-key", cls, "JwksKidAlgMismatch",
        ENVOY_KID + " (the Ed25519 JWK declares alg EdDSA)",
        token(hdr("RS256", ED_KID), body, "RS256", RSA))
    add("es384-kid-of-p256-key", cls, "JwtVerificationFail",
        ENVOY_KTY + " (a P-256 key verifies ES256 only)",
        token(hdr("ES384", EC_KID), body, sig=b"\x01" * 96))

    def swapped(header_alg, sign_alg, kid=RSA_KID):
        h, p = segments(hdr(header_alg, kid), body)
        return f"{h}.{p}.{b64u(sign(sign_alg, RSA, f'{h}.{p}'.encode()))}"

    for header_alg, sign_alg in [("RS256", "PS256"), ("PS256", "RS256"), ("RS384", "PS384"),
                                 ("PS512", "RS512"), ("RS256", "RS384"), ("PS256", "PS512"),
                                 ("RS512", "RS256")]:
        add(f"{header_alg.lower()}-header-over-{sign_alg.lower()}-signature", cls,
            "JwtVerificationFail", ENVOY_SIG + " (the signature scheme follows the header's alg)",
            swapped(header_alg, sign_alg))
    add("ps256-signature-jwk-declares-rs256", cls, "JwksKidAlgMismatch",
        "docs/decisions.md, decision 2 / Envoy: a JWK whose alg differs from the token's is skipped",
        token(hdr("PS256", RSA_RS256_KID), body, "PS256", RSA))
    add("rs384-jwk-declares-rs256", cls, "JwksKidAlgMismatch",
        "docs/decisions.md, decision 2 / Envoy: a JWK whose alg differs from the token's is skipped",
        token(hdr("RS384", RSA_RS256_KID), body, "RS384", RSA))


def kid_injection():
    cls = "kid injection"
    body = claims(sub="admin")
    for label, kid in [
        ("path-traversal-passwd", "../../etc/passwd"),
        ("path-traversal-dev-null", "../../../../../../dev/null"),
        ("sql", "x' UNION SELECT 'secret' --"),
        ("sql-or", "' OR '1'='1"),
        ("shell", RSA_KID + "|/usr/bin/id"),
        ("nul-suffix", RSA_KID + "\u0000"),
        ("nul-only", "\u0000"),
        ("url", "https://attacker.example/jwks.json"),
        ("case-variant", RSA_KID.lower()),
        ("prefix-of-real", RSA_KID[:-1]),
        ("real-plus-suffix", RSA_KID + "x"),
        ("10-kib", "A" * 10240),
        ("unicode", "\u202e" + RSA_KID),
    ]:
        add(f"kid-{label}", cls, "JwksKidAlgMismatch", ENVOY_KID,
            token(hdr("RS256", kid), body, "RS256", RSA))
    add("kid-dev-null-hs256-empty-key", cls, "JwksKidAlgMismatch", ENVOY_KID,
        token(hdr("HS256", "../../../../../../dev/null"), body, "HS256", b""))
    add("kid-passwd-hs256-file-contents", cls, "JwksKidAlgMismatch", ENVOY_KID,
        token(hdr("HS256", "../../etc/passwd"), body, "HS256", b"root:x:0:0:root:/root:/bin/bash\n"))
    for label, kid in [("number", 123), ("object", {}), ("null", None), ("list", [RSA_KID]),
                       ("bool", True)]:
        h = {"alg": "RS256", "kid": kid}
        add(f"kid-{label}", cls, "JwtHeaderBadKid", ENVOY_BADKID, token(h, body, "RS256", RSA))


def embedded_keys():
    cls = "embedded attacker keys"
    body = claims(sub="admin")
    att_jwk = rsa_jwk(ATTACKER_RSA, "attacker")
    att_ec_jwk = ec_jwk(ATTACKER_EC, "attacker-ec")
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISS)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER_RSA.public_key())
        .serial_number(4242)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(ATTACKER_RSA, hashes.SHA256())
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    x5t = b64u(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())
    variants = [
        ("jwk-kid-of-real-key", hdr("RS256", RSA_KID, jwk=att_jwk), "JwtVerificationFail",
         ENVOY_HEADER_KEYS),
        ("jwk-no-kid", hdr("RS256", None, jwk=att_jwk), "JwtVerificationFail",
         ENVOY_HEADER_KEYS + " (no kid: every RSA key is tried)"),
        ("jwk-own-kid", hdr("RS256", "attacker", jwk=att_jwk), "JwksKidAlgMismatch",
         ENVOY_KID),
        ("jku-kid-of-real-key", hdr("RS256", RSA_KID, jku="https://attacker.example/jwks.json"),
         "JwtVerificationFail", ENVOY_HEADER_KEYS),
        ("jku-localhost", hdr("RS256", None, jku="http://127.0.0.1:1/jwks.json"),
         "JwtVerificationFail", ENVOY_HEADER_KEYS + " (nothing is fetched)"),
        ("x5u-kid-of-real-key", hdr("RS256", RSA_KID, x5u="https://attacker.example/cert.pem"),
         "JwtVerificationFail", ENVOY_HEADER_KEYS),
        ("x5c-kid-of-real-key", hdr("RS256", RSA_KID, x5c=x5c), "JwtVerificationFail",
         ENVOY_HEADER_KEYS),
        ("x5c-x5t-no-kid", hdr("RS256", None, x5c=x5c, x5t=x5t), "JwtVerificationFail",
         ENVOY_HEADER_KEYS),
    ]
    for label, h, expect, decision in variants:
        add(f"embedded-{label}", cls, expect, decision, token(h, body, "RS256", ATTACKER_RSA))
    add("embedded-jwk-ec-kid-of-real-ec-key", cls, "JwtVerificationFail", ENVOY_HEADER_KEYS,
        token(hdr("ES256", EC_KID, jwk=att_ec_jwk), body, "ES256", ATTACKER_EC))
    add("embedded-jwk-oct-hs256", cls, "JwtVerificationFail", ENVOY_HEADER_KEYS,
        token(hdr("HS256", RSA_KID, jwk={"kty": "oct", "k": b64u(b"attacker-secret")}), body,
              "HS256", b"attacker-secret"))
    add("attacker-rsa-key-kid-of-real-key", cls, "JwtVerificationFail", ENVOY_SIG,
        token(hdr("RS256"), body, "RS256", ATTACKER_RSA))


def psychic_ecdsa():
    cls = "psychic ECDSA"
    body = claims(sub="admin")
    h, p = segments(hdr("ES256", EC_KID), body)
    (r, s), _ = es256_rs(EC, f"{h}.{p}".encode())
    n = P256_N

    def rs(rv, sv, size=32):
        return rv.to_bytes(size, "big") + sv.to_bytes(size, "big")

    for label, sig in [
        ("r0-s0", rs(0, 0)),
        ("r0-s1", rs(0, 1)),
        ("r1-s0", rs(1, 0)),
        ("r0-s-valid", rs(0, s)),
        ("r-valid-s0", rs(r, 0)),
        ("rn-sn", rs(n, n)),
        ("rn-s-valid", rs(n, s)),
        ("r-valid-sn", rs(r, n)),
        ("r-plus-n", rs(r + n, s, 33)),
        ("r-s-swapped", rs(s, r)),
        ("all-ff", b"\xff" * 64),
    ]:
        add(f"es256-{label}", cls, "JwtVerificationFail",
            "CVE-2022-21449 class: r or s outside [1, n-1] never verifies (BoringSSL / aws-lc) -> JwtVerificationFail",
            f"{h}.{p}.{b64u(sig)}")
    h0, p0 = segments(hdr("ES256", None), body)
    add("es256-r0-s0-no-kid", cls, "JwtVerificationFail",
        "CVE-2022-21449 class, no kid: every EC key is tried, none verifies",
        f"{h0}.{p0}.{b64u(rs(0, 0))}")


def malformed_signatures():
    cls = "malformed signatures"
    body = claims(sub="admin")
    h, p = segments(hdr("ES256", EC_KID), body)
    (r, s), der = es256_rs(EC, f"{h}.{p}".encode())
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    length_decision = "ES256 signatures are exactly 64 bytes of r||s (RFC 7518 §3.4); DER or other lengths -> JwtVerificationFail"
    for label, sig in [
        ("es256-der", der),
        ("es256-truncated-63", raw[:63]),
        ("es256-padded-65", raw + b"\x00"),
        ("es256-zero-prefixed-66", b"\x00" + r.to_bytes(32, "big") + b"\x00" + s.to_bytes(32, "big")),
        ("es256-one-byte", b"\x00"),
        ("es256-doubled-128", raw + raw),
    ]:
        add(f"{label}", cls, "JwtVerificationFail", length_decision, f"{h}.{p}.{b64u(sig)}")
    he, pe = segments(hdr("EdDSA", ED_KID), body)
    ed_sig = ED.sign(f"{he}.{pe}".encode())
    for label, sig in [("63", ed_sig[:63]), ("65", ed_sig + b"\x00"), ("1", b"\x00")]:
        add(f"eddsa-signature-{label}-bytes", cls, "JwtEd25519SignatureWrongLength",
            "Envoy: an Ed25519 signature that is not 64 bytes -> JwtEd25519SignatureWrongLength",
            f"{he}.{pe}.{b64u(sig)}")
    add("eddsa-zero-signature", cls, "JwtVerificationFail", ENVOY_SIG,
        f"{he}.{pe}.{b64u(bytes(64))}")
    hr, pr = segments(hdr("RS256"), body)
    rsig = sign("RS256", RSA, f"{hr}.{pr}".encode())
    for label, sig in [
        ("rs256-truncated", rsig[:-1]),
        ("rs256-zero-prefixed", b"\x00" + rsig),
        ("rs256-bit-flip", bytes([rsig[0] ^ 1]) + rsig[1:]),
        ("rs256-all-zero", bytes(256)),
        ("rs256-one-byte", b"\x00"),
    ]:
        add(label, cls, "JwtVerificationFail", ENVOY_SIG, f"{hr}.{pr}.{b64u(sig)}")
    # Tampering with a validly signed token.
    good = rs256(claims(sub="alice"))
    gh, gp, gs = good.split(".")
    add("payload-swapped-after-signing", cls, "JwtVerificationFail", ENVOY_SIG,
        f"{gh}.{b64u(as_bytes(claims(sub='admin')))}.{gs}")
    other = rs256(claims(sub="bob"))
    add("signature-from-another-token", cls, "JwtVerificationFail", ENVOY_SIG,
        f"{gh}.{gp}.{other.split('.')[2]}")


def structure():
    cls = "empty segments and structure"
    good = rs256(claims(sub="admin"))
    h, p, s = good.split(".")
    for label, t in [
        ("empty-signature", f"{h}.{p}."),
        ("empty-header", f".{p}.{s}"),
        ("empty-payload", f"{h}..{s}"),
        ("trailing-dot", f"{h}.{p}.{s}."),
        ("leading-dot", f".{h}.{p}.{s}"),
        ("double-dot", f"{h}..{p}.{s}"),
        ("four-segments", f"{h}.{p}.{s}.{s}"),
        ("four-segments-short", f"{h}.{p}.{s}.AAAA"),
        ("jwe-five-segments", f"{h}.{p}.{s}.{s}.{s}"),
        ("two-segments", f"{h}.{p}"),
        ("one-segment", h),
        ("only-dots", ".."),
        ("three-dots", "..."),
    ]:
        add(f"structure-{label}", cls, "JwtBadFormat", D2_SEGMENTS, t)
    add("structure-bearer-then-dots-only", cls, "JwtBadFormat", D2_SEGMENTS,
        header_lines=["Authorization: Bearer ."])


def base64_variants():
    cls = "base64 variants"
    # Header JSON chosen so that its standard base64 contains '+' and '/' and needs padding.
    body = claims(sub="admin")
    h_bytes, std = with_std_chars(lambda fill: as_bytes(hdr("RS256", RSA_KID, x=fill + "??>>")))
    p = b64u(as_bytes(body))
    # header section in the standard alphabet, signed as transmitted
    t_std = f"{std}.{p}.{sign_segments(std, p, 'RS256', RSA)}"
    hp = b64u_padded(h_bytes)
    assert hp.endswith("=")
    t_pad = f"{hp}.{p}.{sign_segments(hp, p, 'RS256', RSA)}"
    hu = b64u(h_bytes)
    h_ws = hu[:10] + " " + hu[10:]
    t_ws = f"{h_ws}.{p}.{sign_segments(h_ws, p, 'RS256', RSA)}"
    h_nl = hu[:10] + "\n" + hu[10:]
    t_nl = f"{h_nl}.{p}.{sign_segments(h_nl, p, 'RS256', RSA)}"
    # non-zero unused bits in the header's last character
    h_bits = hu[:-1] + noncanonical(hu[-1], len(h_bytes))
    t_bits = f"{h_bits}.{p}.{sign_segments(h_bits, p, 'RS256', RSA)}"

    # payload variants
    hh = b64u(as_bytes(hdr("RS256")))
    pb, p_std = with_std_chars(lambda fill: as_bytes(claims(sub="admin", x=fill + "??>>")))
    tp_std = f"{hh}.{p_std}.{sign_segments(hh, p_std, 'RS256', RSA)}"
    p_pad = b64u_padded(pb)
    tp_pad = f"{hh}.{p_pad}.{sign_segments(hh, p_pad, 'RS256', RSA)}"
    pu = b64u(pb)
    p_bits = pu[:-1] + noncanonical(pu[-1], len(pb))
    tp_bits = f"{hh}.{p_bits}.{sign_segments(hh, p_bits, 'RS256', RSA)}"

    # signature variants (an RS256 signature is 256 bytes: one byte in the last quantum)
    good = rs256(claims(sub="admin"))
    gh, gp, gs = good.split(".")
    sig = base64.urlsafe_b64decode(gs + "==")
    s_std = base64.b64encode(sig).decode().rstrip("=")
    while "+" not in s_std and "/" not in s_std:  # pick a token whose signature has one
        good = rs256(claims(sub="admin", jti=str(len(s_std) + len(good))))
        gh, gp, gs = good.split(".")
        sig = base64.urlsafe_b64decode(gs + "==")
        s_std = base64.b64encode(sig).decode().rstrip("=")
    s_pad = gs + "=="
    s_bits = gs[:-1] + noncanonical(gs[-1], len(sig))

    q = "query"
    add("b64-header-std-alphabet", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_std, location=q)
    add("b64-header-padding", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_pad, location=q)
    add("b64-header-space", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_ws, location=q)
    add("b64-header-newline", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_nl, location=q)
    add("b64-header-trailing-bits", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_bits, location=q)
    add("b64-payload-std-alphabet", cls, "JwtPayloadParseErrorBadBase64", D2_B64, tp_std, location=q)
    add("b64-payload-padding", cls, "JwtPayloadParseErrorBadBase64", D2_B64, tp_pad, location=q)
    add("b64-payload-trailing-bits", cls, "JwtPayloadParseErrorBadBase64", D2_B64, tp_bits, location=q)
    add("b64-signature-std-alphabet", cls, "JwtSignatureParseErrorBadBase64", D2_B64,
        f"{gh}.{gp}.{s_std}", location=q)
    add("b64-signature-padding", cls, "JwtSignatureParseErrorBadBase64", D2_B64,
        f"{gh}.{gp}.{s_pad}", location=q)
    add("b64-signature-trailing-bits", cls, "JwtSignatureParseErrorBadBase64", D2_B64,
        f"{gh}.{gp}.{s_bits}", location=q)
    # The same in the Authorization header, where only base64url characters and dots reach
    # the decoder: Envoy's extractor (extractJWT) takes the first run of [A-Za-z0-9._-] after
    # "Bearer ", so the token is cut at the first other character.
    cut = " Envoy's header extractor takes the first run of base64url characters and dots after the prefix, so the token is cut at the first '+', '/', '=' or space;"
    add("b64-header-std-alphabet-in-header", cls, "JwtBadFormat",
        cut + " the cut token has no dots -> JwtBadFormat", t_std)
    add("b64-header-padding-in-header", cls, "JwtBadFormat",
        cut + " the cut token has no dots -> JwtBadFormat", t_pad)
    add("b64-header-space-in-header", cls, "JwtBadFormat",
        cut + " the cut token has no dots -> JwtBadFormat", t_ws)
    add("b64-payload-padding-in-header", cls, "JwtBadFormat",
        cut + " the cut token has two sections -> JwtBadFormat", tp_pad)
    add("b64-header-trailing-bits-in-header", cls, "JwtHeaderParseErrorBadBase64", D2_B64, t_bits)
    add("b64-payload-trailing-bits-in-header", cls, "JwtPayloadParseErrorBadBase64", D2_B64, tp_bits)
    add("b64-signature-trailing-bits-in-header", cls, "JwtSignatureParseErrorBadBase64", D2_B64,
        f"{gh}.{gp}.{s_bits}")
    add("b64-signature-padding-in-header", cls, "OK",
        cut + " here that drops only the '==' after a valid signature, leaving the canonical, validly signed token (same as Envoy). Not a forgery: the bytes verified are the issuer's",
        f"{gh}.{gp}.{s_pad}", attack=False)


def with_std_chars(make):
    """JSON bytes from make(filler) whose standard base64 has '+' or '/' and whose length
    is not a multiple of 3 (so padding and unused bits exist)."""
    for n in range(12):
        data = make("a" * n)
        std = base64.b64encode(data).decode().rstrip("=")
        if len(data) % 3 != 0 and ("+" in std or "/" in std):
            return data, std
    raise ValueError("no filler works")


def noncanonical(last_char, n_bytes):
    """`last_char` with its unused low bits set (same decoded bytes, non-canonical text)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {1: 4, 2: 2}[n_bytes % 3]
    v = alphabet.index(last_char)
    assert v & ((1 << unused) - 1) == 0
    return alphabet[v | 1]


def duplicates():
    cls = "duplicate JSON members"
    for label, header_text in [
        ("alg-none-then-rs256", '{"alg":"none","alg":"RS256","kid":"%s"}' % RSA_KID),
        ("alg-rs256-then-none", '{"alg":"RS256","kid":"%s","alg":"none"}' % RSA_KID),
        ("alg-hs256-then-rs256", '{"alg":"HS256","alg":"RS256","kid":"%s"}' % RSA_KID),
        ("kid-twice", '{"alg":"RS256","kid":"attacker","kid":"%s"}' % RSA_KID),
        ("alg-escaped-name", '{"alg":"none","\\u0061lg":"RS256","kid":"%s"}' % RSA_KID),
    ]:
        add(f"dup-header-{label}", cls, "JwtHeaderParseErrorBadJson", D2_DUP,
            token(header_text, claims(), "RS256", RSA))
    for label, payload_text in [
        ("sub-alice-then-admin",
         '{"iss":"%s","sub":"alice","sub":"admin","exp":%d}' % (ISS, EXP)),
        ("iss-evil-then-configured",
         '{"iss":"https://evil.example","sub":"admin","iss":"%s","exp":%d}' % (ISS, EXP)),
        ("iss-configured-then-evil",
         '{"iss":"%s","sub":"admin","iss":"https://evil.example","exp":%d}' % (ISS, EXP)),
        ("exp-past-then-future",
         '{"iss":"%s","sub":"admin","exp":%d,"exp":%d}' % (ISS, PAST, EXP)),
        ("aud-twice",
         '{"iss":"%s","sub":"admin","aud":"other.test","aud":"%s","exp":%d}' % (AUD_ISS, AUD, EXP)),
        ("sub-escaped-name",
         '{"iss":"%s","sub":"alice","\\u0073ub":"admin","exp":%d}' % (ISS, EXP)),
        ("nested-claim", raw_claims_json(',"groups":{"admin":false,"admin":true}')),
    ]:
        add(f"dup-payload-{label}", cls, "JwtPayloadParseErrorBadJson", D2_DUP,
            token(hdr("RS256"), payload_text, "RS256", RSA))


def crit():
    cls = "crit"
    for label, extra, expect in [
        ("exp", {"crit": ["exp"]}, "JwtHeaderUnsupportedCrit"),
        ("b64-false", {"crit": ["b64"], "b64": False}, "JwtHeaderUnsupportedCrit"),
        ("unknown-extension", {"crit": ["exp2"], "exp2": 1}, "JwtHeaderUnsupportedCrit"),
        ("absent-member", {"crit": ["foo"]}, "JwtHeaderUnsupportedCrit"),
        ("empty-list", {"crit": []}, "JwtHeaderUnsupportedCrit"),
        ("string", {"crit": "exp"}, "JwtHeaderUnsupportedCrit"),
        ("standard-name-alg", {"crit": ["alg"]}, "JwtHeaderUnsupportedCrit"),
        ("null", {"crit": None}, "JwtHeaderUnsupportedCrit"),
        ("object", {"crit": {"exp": True}}, "JwtHeaderUnsupportedCrit"),
    ]:
        add(f"crit-{label}", cls, expect, D2_CRIT, rs256(claims(), **extra))
    # b64:false with an unencoded payload (RFC 7797). RFC 7797's own example payload "$.02"
    # holds a dot, which makes four sections: rejected before the header is read.
    h = b64u(as_bytes(hdr("RS256", RSA_KID, crit=["b64"], b64=False)))
    payload = "$.02"
    add("crit-b64-false-unencoded-payload-rfc7797", cls, "JwtBadFormat",
        D2_SEGMENTS + " (the unencoded payload '$.02' adds a fourth section; the split comes before crit)",
        f"{h}.{payload}.{sign_segments(h, payload, 'RS256', RSA)}", location="query")
    payload = '{"sub":"admin","exp":%d}' % EXP  # no dot in it
    add("crit-b64-false-unencoded-json-payload", cls, "JwtHeaderUnsupportedCrit",
        D2_CRIT + " (the header is checked before the unencoded payload)",
        f"{h}.{payload}.{sign_segments(h, payload, 'RS256', RSA)}", location="query")


def times():
    cls = "exp/nbf/iat shapes"
    not_int = {"exp": "JwtPayloadParseErrorExpNotInteger", "nbf": "JwtPayloadParseErrorNbfNotInteger",
               "iat": "JwtPayloadParseErrorIatNotInteger"}
    out_of_range = {"exp": "JwtPayloadParseErrorExpOutOfRange",
                    "nbf": "JwtPayloadParseErrorNbfOutOfRange",
                    "iat": "JwtPayloadParseErrorIatOutOfRange"}
    for claim in ("exp", "nbf", "iat"):
        for label, raw in [
            ("string", '"4102444800"'),
            ("null", "null"),
            ("bool", "true"),
            ("list", "[4102444800]"),
            ("object", '{"t":4102444800}'),
        ]:
            add(f"{claim}-{label}", cls, not_int[claim], ENVOY_TIME_TYPE,
                token(hdr("RS256"), time_payload(claim, raw), "RS256", RSA))
        for label, raw in [
            ("negative", "-1"),
            ("negative-fraction", "-0.5"),
            ("1e300", "1e300"),
            ("2-pow-64", "18446744073709551616"),
            ("2-pow-64-minus-1", "18446744073709551615"),
            ("1e5000", "1e5000"),
            ("400-digits", "9" * 400),
            ("negative-huge", "-1e300"),
        ]:
            add(f"{claim}-{label}", cls, out_of_range[claim],
                ENVOY_TIME_TYPE + "; Envoy reads numbers as doubles, so 2^64-1 is 2^64 there",
                token(hdr("RS256"), time_payload(claim, raw), "RS256", RSA))
    add("exp-far-past", cls, "JwtExpired", ENVOY_TIME, rs256(claims(exp=PAST)))
    add("exp-one", cls, "JwtExpired", ENVOY_TIME, rs256(claims(exp=1)))
    add("exp-past-fraction", cls, "JwtExpired", ENVOY_TIME + " (fraction truncated)",
        rs256(claims(exp=PAST + 0.999)))
    add("exp-past-exponent-notation", cls, "JwtExpired", ENVOY_TIME,
        token(hdr("RS256"), time_payload("exp", "1.0e9"), "RS256", RSA))
    add("nbf-far-future", cls, "JwtNotYetValid", ENVOY_TIME, rs256(claims(nbf=EXP)))
    add("nbf-future-exp-past", cls, "JwtNotYetValid", ENVOY_TIME + " (nbf is checked first)",
        rs256(claims(nbf=EXP, exp=PAST)))
    add("nbf-huge-finite", cls, "JwtNotYetValid", ENVOY_TIME,
        token(hdr("RS256"), time_payload("nbf", "1.8e19"), "RS256", RSA))


def time_payload(claim, raw):
    others = {"iat": IAT, "exp": EXP}
    members = [f'"iss":"{ISS}"', '"sub":"attack-suite"']
    for k, v in others.items():
        if k != claim:
            members.append(f'"{k}":{v}')
    members.append(f'"{claim}":{raw}')
    return "{" + ",".join(members) + "}"


def issuers():
    cls = "iss shapes"
    for label, iss in [("number", 1), ("list", [ISS]), ("null", None), ("object", {"iss": ISS}),
                       ("bool", True)]:
        add(f"iss-{label}", cls, "JwtPayloadParseErrorIssNotString", ENVOY_ISS_TYPE,
            rs256(claims(iss=iss)))
    for label, iss in [("empty", ""), ("case-variant", "Testing@secure.istio.io"),
                       ("trailing-slash", ISS + "/"), ("trailing-space", ISS + " "),
                       ("leading-space", " " + ISS), ("nul-suffix", ISS + "\u0000"),
                       ("unconfigured", "https://evil.example"),
                       ("aud-issuer-http", "http://aud.meshguard.test")]:
        add(f"iss-{label}", cls, "JwtUnknownIssuer", ENVOY_ISS, rs256(claims(iss=iss)))
    add("iss-missing", cls, "JwtUnknownIssuer", ENVOY_ISS + " (a missing iss counts as empty)",
        rs256(claims(iss=DROP)))
    cls = "sub/jti shapes"
    for label, sub in [("number", 42), ("list", ["admin"]), ("null", None), ("object", {})]:
        add(f"sub-{label}", cls, "JwtPayloadParseErrorSubNotString",
            "Envoy jwt_verify_lib: sub must be a string -> JwtPayloadParseErrorSubNotString",
            rs256(claims(sub=sub)))
    add("jti-number", cls, "JwtPayloadParseErrorJtiNotString",
        "Envoy jwt_verify_lib: jti must be a string -> JwtPayloadParseErrorJtiNotString",
        rs256(claims(jti=7)))


def audiences():
    cls = "aud shapes (audiences configured)"
    for label, aud in [("number", 1), ("list-with-number", [AUD, 1]), ("object", {"aud": AUD}),
                       ("null", None), ("bool", True), ("list-of-lists", [[AUD]])]:
        add(f"aud-{label}", cls, "JwtPayloadParseErrorAudNotString", ENVOY_AUD_TYPE,
            rs256(claims(iss=AUD_ISS, aud=aud)))
    for label, aud in [("empty-list", []), ("other", "other.test"), ("case-variant", AUD.upper()),
                       ("suffix", AUD + ".evil"), ("prefix", "evil." + AUD),
                       ("empty-string", ""), ("double-slash", AUD + "//"),
                       ("other-scheme", "ftp://" + AUD)]:
        add(f"aud-{label}", cls, "JwtAudienceNotAllowed", ENVOY_AUD,
            rs256(claims(iss=AUD_ISS, aud=aud)))
    add("aud-missing", cls, "JwtAudienceNotAllowed",
        ENVOY_AUD + " (a token without aud fails a configured list)", rs256(claims(iss=AUD_ISS)))


def nested(depth):
    v = {}
    for _ in range(depth - 1):
        v = {"a": v}
    return v


def sized_token(total):
    """A valid RS256 token exactly `total` characters long."""
    for extra in range(4):
        hextra = {"p": "x" * extra} if extra else {}
        base = len(rs256(claims(pad=""), **hextra))
        for pad in range(max(0, (total - base) * 3 // 4 - 8), total):
            t = rs256(claims(pad="x" * pad), **hextra)
            if len(t) == total:
                return t
            if len(t) > total:
                break
    raise ValueError(f"no token of length {total}")


def size_and_shape():
    cls = "size, depth and payload shape"
    add("huge-token-16-kib-plus-1", cls, "JwtTooLarge", D2_SIZE, sized_token(16 * 1024 + 1))
    add("huge-token-20-kib", cls, "JwtTooLarge", D2_SIZE, rs256(claims(pad="x" * 15000)))
    add("huge-token-over-header-limit", cls, "431",
        "docs/decisions.md, decision 2: a request head over the header limit (60 KiB) is refused with 431 before any JWT work",
        rs256(claims(pad="x" * 50000)))
    add("huge-token-in-query", cls, "JwtTooLarge", D2_SIZE, rs256(claims(pad="x" * 15000)),
        location="query")
    add("deep-claims-depth-33", cls, "JwtPayloadParseErrorBadJson", D2_DEPTH,
        rs256(claims(nest=nested(32))))
    add("deep-claims-depth-100", cls, "JwtPayloadParseErrorBadJson", D2_DEPTH,
        rs256(claims(nest=nested(100))))
    add("deep-claims-arrays-5000", cls, "JwtPayloadParseErrorBadJson", D2_DEPTH,
        token(hdr("RS256"), raw_claims_json(',"nest":' + "[" * 5000 + "]" * 5000), "RS256", RSA))
    add("deep-header-depth-100", cls, "JwtHeaderParseErrorBadJson", D2_DEPTH,
        rs256(claims(), nest=nested(100)))
    for label, payload in [
        ("array", "[]"),
        ("array-of-claims", "[" + compact(claims()) + "]"),
        ("string", '"' + ISS + '"'),
        ("number", "1"),
        ("null", "null"),
        ("true", "true"),
        ("not-json", "iss=" + ISS),
        ("trailing-garbage", compact(claims()) + "x"),
        ("two-objects", compact(claims()) + compact(claims())),
        ("utf8-bom", b"\xef\xbb\xbf" + as_bytes(claims())),
        ("invalid-utf8", as_bytes(claims())[:-1] + b',"x":"\xff"}'),
        ("lone-surrogate", raw_claims_json(',"x":"\\ud800"')),
        ("single-quotes", "{'iss':'%s'}" % ISS),
        ("empty-object", "{}"),
    ]:
        expect = "JwtPayloadParseErrorBadJson"
        decision = ENVOY_NOT_OBJECT
        if label == "empty-object":
            expect = "JwtUnknownIssuer"
            decision = ENVOY_ISS + " ({} is an object without iss)"
        add(f"payload-{label}", cls, expect, decision,
            token(hdr("RS256"), payload, "RS256", RSA))
    for label, header in [("array", '["RS256"]'), ("string", '"RS256"'), ("not-json", "alg=RS256")]:
        add(f"header-{label}", cls, "JwtHeaderParseErrorBadJson",
            "Envoy jwt_verify_lib: the header must be a JSON object -> JwtHeaderParseErrorBadJson",
            token(header, claims(), "RS256", RSA))


def placement():
    cls = "token placement"
    valid = rs256(claims(sub="alice"))
    forged = token(hdr("RS256"), claims(sub="admin"), "RS256", ATTACKER_RSA)
    add("two-authorization-headers-valid-then-forged", cls, "JwtMultipleTokens", D2_MULTI,
        header_lines=[f"Authorization: Bearer {valid}", f"Authorization: Bearer {forged}"],
        tokens=[valid, forged])
    add("two-authorization-headers-forged-then-valid", cls, "JwtMultipleTokens", D2_MULTI,
        header_lines=[f"Authorization: Bearer {forged}", f"Authorization: Bearer {valid}"],
        tokens=[forged, valid])
    add("two-authorization-headers-both-valid", cls, "JwtMultipleTokens", D2_MULTI,
        header_lines=[f"Authorization: Bearer {valid}", f"Authorization: Bearer {valid}"],
        tokens=[valid, valid])
    add("two-authorization-headers-second-lowercase-name", cls, "JwtMultipleTokens",
        D2_MULTI + " (header names are case-insensitive)",
        header_lines=[f"Authorization: Bearer {valid}", f"authorization: Bearer {forged}"],
        tokens=[valid, forged])
    add("authorization-valid-and-garbage-access-token", cls, "JwtBadFormat",
        "Envoy: every token extracted for the provider must verify (header and query both); the garbage one fails first",
        header_lines=[f"Authorization: Bearer {valid}"], query="access_token=garbage",
        tokens=[valid, "garbage"])
    add("authorization-valid-and-forged-access-token", cls, "JwtVerificationFail",
        "Envoy: every token extracted for the provider must verify (header and query both)",
        header_lines=[f"Authorization: Bearer {valid}"], query="access_token=" + forged,
        tokens=[valid, forged])
    add("authorization-forged-and-valid-access-token", cls, "JwtVerificationFail",
        "Envoy: every token extracted for the provider must verify (header and query both)",
        header_lines=[f"Authorization: Bearer {forged}"], query="access_token=" + valid,
        tokens=[forged, valid])
    add("two-access-token-params", cls, "JwtMultipleTokens", D2_MULTI,
        header_lines=[], query=f"access_token={valid}&access_token={forged}",
        tokens=[valid, forged])
    add("authorization-and-access-token-both-valid", cls, "OK",
        "Envoy: both extracted tokens verify, so the request is authenticated",
        header_lines=[f"Authorization: Bearer {valid}"], query="access_token=" + valid,
        tokens=[valid, valid], attack=False)
    add("lowercase-bearer-forged", cls, "RBAC",
        "Envoy: the prefix 'Bearer ' is matched case-sensitively, so no token is extracted; the policy then denies the anonymous request (403)",
        header_lines=[f"Authorization: bearer {forged}"], tokens=[forged])
    add("bearer-without-token", cls, "RBAC",
        "an empty Authorization value after 'Bearer' carries no token (the trailing space is not part of the field value): anonymous, denied by the policy",
        header_lines=["Authorization: Bearer "])
    add("one-header-valid-then-forged", cls, "JwtMultipleTokens",
        "docs/decisions.md, decision 2: two tokens in one Authorization value (what an intermediary produces when it joins two headers, RFC 9110 §5.3) are refused like two headers; Envoy would take the first",
        header_lines=[f"Authorization: Bearer {valid}, Bearer {forged}"], tokens=[valid, forged])
    add("one-header-forged-then-valid", cls, "JwtMultipleTokens",
        "docs/decisions.md, decision 2: two tokens in one Authorization value are refused like two headers",
        header_lines=[f"Authorization: Bearer {forged}, Bearer {valid}"], tokens=[forged, valid])

def main():
    valid_controls()
    alg_none()
    hmac_confusion()
    cross_family()
    kid_injection()
    embedded_keys()
    psychic_ecdsa()
    malformed_signatures()
    structure()
    base64_variants()
    duplicates()
    crit()
    times()
    issuers()
    audiences()
    size_and_shape()
    placement()

    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=1, ensure_ascii=True)
        f.write("\n")
    with open(os.path.join(HERE, "jwks.json"), "w") as f:
        json.dump(JWKS, f, indent=1)
        f.write("\n")
    jwks_inline = compact(JWKS)
    with open(os.path.join(HERE, "policy.yaml"), "w") as f:
        f.write(POLICY.format(iss=ISS, aud_iss=AUD_ISS, aud=AUD, jwks=jwks_inline))
    counts = {}
    for c in CASES:
        counts[c["class"]] = counts.get(c["class"], 0) + 1
    for k, v in counts.items():
        print(f"{v:4} {k}")
    print(f"{len(CASES):4} cases")


POLICY = """\
# Generated by testdata/attacks/generate.py: the proxy configuration of
# crates/cli/tests/jwt_attacks.rs. Workload: --namespace attacks (no selector).
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: attack-suite
  namespace: attacks
spec:
  jwtRules:
  - issuer: "{iss}"
    jwks: '{jwks}'
  - issuer: "{aud_iss}"
    audiences: ["{aud}"]
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-principal
  namespace: attacks
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"""


if __name__ == "__main__":
    main()
