"""Interoperability check with PyJWT, a JWT library nobody here wrote.

usage: pyjwt_check.py JWKS_FILE KEYS_DIR TOKEN_FILE... OUT_DIR

1. Verifies each Charter token against Charter's JWKS, with the algorithm
   taken from the JWK (never from the token), and prints its lid.
2. Signs one token per private key in KEYS_DIR with PyJWT (kid = file name),
   written to OUT_DIR/<kid>.jwt, for Charter's verifier to accept.
Exits non-zero on any failure.
"""
import json
import pathlib
import sys
import time

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def main() -> int:
    jwks_file, keys_dir, *tokens, out_dir = sys.argv[1:]
    jwks = jwt.PyJWKSet.from_json(pathlib.Path(jwks_file).read_text())
    by_kid = {k.key_id: k for k in jwks.keys}
    for path in tokens:
        token = pathlib.Path(path).read_text().strip()
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = by_kid[kid]
        claims = jwt.decode(
            token,
            key=jwk.key,
            algorithms=[jwk.algorithm_name],
            options={"verify_aud": False},
        )
        print(f"pyjwt verified {jwk.algorithm_name} token lid={claims['lid']}")

    now = int(time.time())
    for pem_path in sorted(pathlib.Path(keys_dir).glob("*.pem")):
        key = load_pem_private_key(pem_path.read_bytes(), password=None)
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "EdDSA"
        assert isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey))
        kid = pem_path.stem
        claims = {
            "jti": f"pyjwt-{kid}",
            "sub": "https://pyjwt.example.com/",
            "lid": f"pyjwt-{alg}",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "features": ["from-pyjwt"],
        }
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        pathlib.Path(out_dir, f"{kid}.jwt").write_text(token)
        print(f"pyjwt signed {alg} token with {kid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
