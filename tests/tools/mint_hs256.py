#!/usr/bin/env python3
"""Mint an HS256 JWT with the standard library: mint_hs256.py SECRET KID SUB [TTL_SECONDS] [EXTRA_JSON]."""
import base64, hashlib, hmac, json, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

secret, kid, sub = sys.argv[1], sys.argv[2], sys.argv[3]
ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 3600
claims = {"sub": sub, "exp": int(time.time()) + ttl, "iat": int(time.time())}
if len(sys.argv) > 5:
    claims.update(json.loads(sys.argv[5]))
header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
payload = b64(json.dumps(claims).encode())
sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
print(f"{header}.{payload}.{b64(sig)}")
