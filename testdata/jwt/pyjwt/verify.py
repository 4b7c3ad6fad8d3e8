#!/usr/bin/env python3
"""Verifies meshguard-signed tokens with PyJWT (used by crates/jwt/tests/independent.rs).

Reads {"jwks": {...}, "issuer": str, "audience": str, "tokens": [{"name", "alg", "kid",
"token", "expect_valid"}]} on stdin. Prints one line per token and exits 1 if any result
differs from expect_valid. Needs: pip install pyjwt cryptography
"""

import json
import sys

import jwt


def main():
    req = json.load(sys.stdin)
    keys = {k.get("kid"): k for k in req["jwks"]["keys"]}
    failures = 0
    for t in req["tokens"]:
        key = jwt.PyJWK(keys[t["kid"]], algorithm=t["alg"]).key
        try:
            claims = jwt.decode(
                t["token"],
                key,
                algorithms=[t["alg"]],
                audience=req["audience"],
                issuer=req["issuer"],
            )
            ok, detail = True, claims.get("sub")
        except jwt.PyJWTError as e:
            ok, detail = False, "%s: %s" % (type(e).__name__, e)
        good = ok == t["expect_valid"]
        failures += 0 if good else 1
        print("%s %s valid=%s (%s)" % ("ok  " if good else "FAIL", t["name"], ok, detail))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
