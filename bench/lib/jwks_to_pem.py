#!/usr/bin/env python3
"""Convert the RSA key of a JWKS to an SPKI PEM public key (what HAProxy 2.6's jwt_verify reads).

usage: jwks_to_pem.py JWKS.json [KID] > key.pub.pem

Standard library only: the DER is built by hand (SubjectPublicKeyInfo with rsaEncryption and
RSAPublicKey{n, e}). Use the key with `kid` KID, or the only RSA key.
"""
import base64
import json
import sys


def b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + der_len(len(body)) + body


def der_int(raw: bytes) -> bytes:
    raw = raw.lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return tlv(0x02, raw)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        keys = [k for k in json.load(f)["keys"] if k.get("kty") == "RSA"]
    if len(sys.argv) == 3:
        keys = [k for k in keys if k.get("kid") == sys.argv[2]]
    if len(keys) != 1:
        sys.exit(f"expected exactly one RSA key, found {len(keys)}")
    k = keys[0]
    rsa_public_key = tlv(0x30, der_int(b64u(k["n"])) + der_int(b64u(k["e"])))
    rsa_encryption = tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    spki = tlv(0x30, rsa_encryption + tlv(0x03, b"\x00" + rsa_public_key))
    b = base64.b64encode(spki).decode()
    print("-----BEGIN PUBLIC KEY-----")
    for i in range(0, len(b), 64):
        print(b[i : i + 64])
    print("-----END PUBLIC KEY-----")


if __name__ == "__main__":
    main()
