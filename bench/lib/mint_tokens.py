#!/usr/bin/env python3
"""Mint N distinct RS256 tokens that pass the walkthrough's step 4, one per line.

usage: mint_tokens.py KEY.pem KID N OUT [--procs P]

Each token: iss = sub = testing@secure.istio.io, groups = [group1, group2] (like
testdata/istio-demo/groups-scope.jwt), a distinct `jti`, `iat` now and `exp` in 24 h.
Signing uses `cryptography` (OpenSSL) directly, split across P processes; 20,000 tokens take
a few seconds. Exits 3 if `cryptography` is missing, so that the caller can fall back.
"""
import base64
import json
import os
import sys
import time
from multiprocessing import Pool

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
except ImportError:  # the caller falls back to `meshguard token sign`
    sys.exit(3)

ISSUER = "testing@secure.istio.io"
_key = None


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _init(key_path):
    global _key
    with open(key_path, "rb") as f:
        _key = serialization.load_pem_private_key(f.read(), password=None)


def _mint(args):
    kid, start, count, now = args
    header = b64(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT"}, separators=(",", ":")).encode())
    out = []
    for i in range(start, start + count):
        claims = {
            "exp": now + 86400,
            "groups": ["group1", "group2"],
            "iat": now,
            "iss": ISSUER,
            "jti": f"bench-{now}-{i:08d}",
            "sub": ISSUER,
        }
        signing_input = header + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        out.append(signing_input + "." + b64(sig))
    return out


def main():
    args = sys.argv[1:]
    procs = os.cpu_count() or 1
    if "--procs" in args:
        i = args.index("--procs")
        procs = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 4:
        sys.exit(__doc__)
    key_path, kid, n, out_path = args[0], args[1], int(args[2]), args[3]
    now = int(time.time())
    chunk = (n + procs - 1) // procs
    jobs = [(kid, s, min(chunk, n - s), now) for s in range(0, n, chunk)]
    with Pool(procs, initializer=_init, initargs=(key_path,)) as pool:
        parts = pool.map(_mint, jobs)
    with open(out_path, "w") as f:
        for part in parts:
            for tok in part:
                f.write(tok + "\n")


if __name__ == "__main__":
    main()
