#!/usr/bin/env python3
"""Regenerates the PyJWT-signed test tokens used by crates/jwt/tests/independent.rs.

Keys are generated fresh with `cryptography`; only the public JWKS and the tokens are
written (next to this script): jwks.json and tokens.json. Needs: pip install pyjwt cryptography

    python3 testdata/jwt/pyjwt/generate.py
"""

import json
import os
import secrets

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

HERE = os.path.dirname(os.path.abspath(__file__))

ISSUER = "https://pyjwt.meshguard.test"
AUDIENCE = "meshguard-tests"
IAT = 1700000000
EXP = 4102444800  # 2100-01-01


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_keys = {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
    }
    ed_key = ed25519.Ed25519PrivateKey.generate()
    hmac_secret = secrets.token_bytes(64)

    jwks = []

    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    rsa_jwk["kid"] = "rsa"  # no alg: usable for RS* and PS*
    jwks.append(rsa_jwk)
    for alg, key in ec_keys.items():
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["kid"] = "ec" + alg[2:]
        jwk["alg"] = alg
        jwks.append(jwk)
    ed_jwk = OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)
    ed_jwk["kid"] = "ed"
    jwks.append(ed_jwk)
    hs_jwk = HMACAlgorithm.to_jwk(hmac_secret, as_dict=True)
    hs_jwk["kid"] = "hs"
    jwks.append(hs_jwk)

    signers = {
        "HS256": ("hs", hmac_secret),
        "HS384": ("hs", hmac_secret),
        "HS512": ("hs", hmac_secret),
        "RS256": ("rsa", rsa_key),
        "RS384": ("rsa", rsa_key),
        "RS512": ("rsa", rsa_key),
        "PS256": ("rsa", rsa_key),
        "PS384": ("rsa", rsa_key),
        "PS512": ("rsa", rsa_key),
        "ES256": ("ec256", ec_keys["ES256"]),
        "ES384": ("ec384", ec_keys["ES384"]),
        "ES512": ("ec512", ec_keys["ES512"]),
        "EdDSA": ("ed", ed_key),
    }

    tokens = []
    for alg, (kid, key) in signers.items():
        claims = {
            "iss": ISSUER,
            "sub": "pyjwt-" + alg,
            "aud": AUDIENCE,
            "iat": IAT,
            "nbf": IAT,
            "exp": EXP,
            "groups": ["a", "b"],
        }
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        tokens.append({"name": alg, "alg": alg, "kid": kid, "sub": claims["sub"], "token": token})
    # Without kid: every key of the right type is tried.
    for alg, (kid, key) in (("RS256", signers["RS256"]), ("ES256", signers["ES256"])):
        claims = {"iss": ISSUER, "sub": "pyjwt-nokid-" + alg, "aud": AUDIENCE, "exp": EXP}
        token = jwt.encode(claims, key, algorithm=alg)
        tokens.append({"name": alg + "-nokid", "alg": alg, "kid": None, "sub": claims["sub"], "token": token})

    with open(os.path.join(HERE, "jwks.json"), "w") as f:
        json.dump({"keys": jwks}, f, indent=2)
        f.write("\n")
    with open(os.path.join(HERE, "tokens.json"), "w") as f:
        json.dump(
            {
                "generator": "pyjwt %s, cryptography %s" % (jwt.__version__, cryptography.__version__),
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "tokens": tokens,
            },
            f,
            indent=2,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
