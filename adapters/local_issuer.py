"""A local token issuer standing in for Entra ID: the same tokens, signed by a key on this disk.

On first use it generates an RSA key pair under `folder` (`.local/issuer/` by default:
settings.local_dir / "issuer"): `private-key.pem` (mode 0600) and `jwks.json`, the public half
as a JWKS, which the app's `JwtVerifier` reads (adapters/identity.py). `mint` signs access
tokens with the claims Entra ID issues (iss, aud, exp, nbf, iat, tid, oid, preferred_username,
upn, name, roles, uti, ver), so the same verifier and the same authorization run locally as in
Azure: only the key source and the issuer differ.

Anyone who can read `.local/issuer/private-key.pem` can mint any identity: it is a developer's
stand-in, never used when ENTRA_TENANT_ID is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from adapters.identity import JwtVerifier
from orchestrator.settings import LOCAL_API_AUDIENCE

LOCAL_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://retrain-orchestrator.local/tenant"))
KEY_FILE = "private-key.pem"
JWKS_FILE = "jwks.json"
DEFAULT_LIFETIME = timedelta(hours=1)


def local_issuer_url(tenant_id: str = LOCAL_TENANT_ID) -> str:
    return f"https://login.retrain-orchestrator.local/{tenant_id}/v2.0"


def object_id_for(upn: str, tenant_id: str = LOCAL_TENANT_ID) -> str:
    """A stable object id per UPN (case-insensitive), as Entra ID keeps one per user."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{upn.casefold()}"))


class LocalIssuer:
    def __init__(self, folder: Path, *, tenant_id: str = LOCAL_TENANT_ID) -> None:
        self.folder = Path(folder)
        self.tenant_id = tenant_id
        self.issuer = local_issuer_url(tenant_id)
        self._key: rsa.RSAPrivateKey | None = None
        self._kid: str | None = None

    @property
    def jwks_path(self) -> Path:
        return self.folder / JWKS_FILE

    def verifier(self, audience: str | Sequence[str] = LOCAL_API_AUDIENCE) -> JwtVerifier:
        """The app's verifier for this issuer's tokens (creates no key: a token can only be
        valid once `mint` has made one)."""
        return JwtVerifier(self.issuer, audience, self.tenant_id, self.jwks_path)

    def mint(
        self,
        name_or_upn: str,
        *,
        roles: Sequence[str] = (),
        lifetime: timedelta = DEFAULT_LIFETIME,
        audience: str = LOCAL_API_AUDIENCE,
        now: datetime | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """A signed access token for `name_or_upn` ("ana" or "ana@contoso.com"), valid for
        `lifetime` from `now`, for `audience`, holding the app `roles`. `claims` override or
        add claims (tests: another tenant, a missing claim)."""
        who = name_or_upn  # as given: Entra's names are not trimmed either
        if not who.strip():
            raise ValueError("a token names someone")
        key, kid = self._signing_key()
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        body: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer,
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int((issued + lifetime).timestamp()),
            "name": who.split("@", 1)[0],
            "oid": object_id_for(who, self.tenant_id),
            "preferred_username": who,
            "upn": who,
            "roles": list(roles),
            "sub": object_id_for(f"sub:{who}", self.tenant_id),
            "tid": self.tenant_id,
            "uti": base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
            "ver": "2.0",
        }
        body.update(claims or {})
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    # ------------------------------------------------------------------ the key pair

    def _signing_key(self) -> tuple[rsa.RSAPrivateKey, str]:
        if self._key is None or self._kid is None:
            self._key = self._load_or_create()
            jwk = public_jwk(self._key.public_key())
            self._kid = jwk["kid"]
            self._write_jwks(jwk)
        return self._key, self._kid

    def _load_or_create(self) -> rsa.RSAPrivateKey:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / KEY_FILE
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Written aside, then linked into place: the first of two processes starting
            # together wins and both use its key (a link never replaces a file).
            temporary = self.folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(pem)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} is not an RSA private key")
        return loaded

    def _write_jwks(self, jwk: dict[str, Any]) -> None:
        document = {"keys": [jwk]}
        try:
            if json.loads(self.jwks_path.read_text()) == document:
                return
        except (OSError, ValueError):
            pass
        temporary = self.folder / f".{JWKS_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        temporary.write_text(json.dumps(document, indent=2))
        os.replace(temporary, self.jwks_path)


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The public key as a JWK, its `kid` the RFC 7638 thumbprint (as Entra's are stable ids)."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    required = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(required.encode()).digest())
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": thumbprint.rstrip(b"=").decode(),
        "n": jwk["n"],
        "e": jwk["e"],
    }
