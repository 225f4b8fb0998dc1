"""IdentityVerifier: who a bearer token says its bearer is, checked as Entra ID issues them.

One code path for every token: `JwtVerifier.verify` checks an RS256 JWT (PyJWT) against the
issuer's published keys, its issuer, audience, tenant and lifetime, and requires the claims
Entra ID puts in an access token (exp, iat, iss, aud, tid, oid). Only the key source and the
issuer differ between Azure and a laptop:

- Entra ID (`JwtVerifier.for_entra`): the tenant's JWKS at
  https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys, fetched on first use and
  cached (`jwt.PyJWKClient`); a token signed by a key not in the cache (`kid` unknown: Entra
  has rotated its keys) makes it fetch the set again, at most once per `refetch_cooldown`.
  Issuers: https://login.microsoftonline.com/{tenant}/v2.0 (v2 tokens) and
  https://sts.windows.net/{tenant}/ (v1 tokens).
- Locally: the JWKS file the local issuer writes (adapters/local_issuer.py), read again when a
  token names a key it does not hold (the issuer was reset).

Every refusal is `Unauthenticated(reason)`; keys that cannot be fetched are
`IdentityUnavailable` (transient: the message is delivered again, never dead-lettered).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient

from orchestrator.ports import IdentityUnavailable, Principal, Unauthenticated

ENTRA_AUTHORITY = "https://login.microsoftonline.com"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "tid", "oid")
ALGORITHMS = ["RS256"]
LEEWAY_SECONDS = 60  # clock skew allowed on exp, nbf and iat
BEARER = "bearer "


def entra_issuers(tenant_id: str) -> tuple[str, str]:
    """The issuers of the tenant's v2 and v1 access tokens."""
    return (f"{ENTRA_AUTHORITY}/{tenant_id}/v2.0", f"https://sts.windows.net/{tenant_id}/")


def entra_jwks_uri(tenant_id: str) -> str:
    return f"{ENTRA_AUTHORITY}/{tenant_id}/discovery/v2.0/keys"


class _UrlKeys:
    """Entra ID's keys for the tenant, over HTTPS, cached; refetched on an unknown kid."""

    def __init__(self, uri: str, *, cooldown: float, timeout: float) -> None:
        self._client = PyJWKClient(
            uri, cache_jwk_set=True, lifespan=3600, timeout=timeout, cooldown_duration=cooldown
        )

    def key(self, kid: str) -> PyJWK:
        try:
            return self._client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise IdentityUnavailable(f"the issuer's keys cannot be read: {exc}") from exc
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            raise Unauthenticated(
                f"unknown key: the issuer publishes no key {_shown(kid)}"
            ) from exc


class _FileKeys:
    """The local issuer's JWKS file; read again when a token names a key it does not hold."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: dict[str, PyJWK] = {}
        self._lock = threading.Lock()

    def key(self, kid: str) -> PyJWK:
        with self._lock:
            if kid not in self._keys:
                self._keys = self._read()
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated(f"unknown key: the issuer publishes no key {_shown(kid)}")
        return found

    def _read(self) -> dict[str, PyJWK]:
        try:
            document = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}  # no issuer yet: it has signed nothing
        except (OSError, ValueError) as exc:
            raise IdentityUnavailable(f"cannot read the JWKS {self._path}: {exc}") from exc
        keys = {}
        for entry in document.get("keys", []):
            if entry.get("kid") and entry.get("use", "sig") == "sig":
                keys[entry["kid"]] = PyJWK.from_dict(entry)
        return keys


class JwtVerifier:
    """Checks a bearer token (`verify`) against one issuer's keys, issuers, audience, tenant.

    `issuer`: the issuer (or issuers) a token may name; `audience`: the API's audience (or
    audiences: the Application ID URI and the client id); `jwks`: an http(s) URL of a JWKS
    (Entra ID) or the path of a JWKS file (the local issuer).
    """

    def __init__(
        self,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        tenant_id: str,
        jwks: str | Path,
        *,
        leeway: float = LEEWAY_SECONDS,
        refetch_cooldown: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.issuers = (issuer,) if isinstance(issuer, str) else tuple(issuer)
        self.audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not self.issuers or not self.audiences:
            raise ValueError("a verifier needs at least one issuer and one audience")
        self.tenant_id = tenant_id
        self.leeway = leeway
        self.jwks = jwks
        self._keys: _UrlKeys | _FileKeys
        if isinstance(jwks, Path):
            self._keys = _FileKeys(jwks)
        else:
            self._keys = _UrlKeys(jwks, cooldown=refetch_cooldown, timeout=timeout)

    @classmethod
    def for_entra(
        cls, tenant_id: str, audience: str | Sequence[str], **options: Any
    ) -> JwtVerifier:
        """Access tokens of `tenant_id` (v2 and v1) for the API app `audience`."""
        return cls(
            entra_issuers(tenant_id), audience, tenant_id, entra_jwks_uri(tenant_id), **options
        )

    def verify(self, token: str) -> Principal:
        token = (token or "").strip()
        if token[: len(BEARER)].lower() == BEARER:
            token = token[len(BEARER) :].strip()
        if not token:
            raise Unauthenticated("missing token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed token: {_plain(str(exc))}") from exc
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated(
                f"bad signature: algorithm {_shown(header.get('alg'))} is not RS256"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("unknown key: the token names no key (kid)")
        key = self._keys.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=list(self.audiences),
                issuer=list(self.issuers),
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("expired token") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                f"wrong audience: the token is for {_shown(_claim(token, 'aud'))}, "
                f"not {' or '.join(self.audiences)}"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            # The signature has been checked by now (PyJWT checks it before the claims).
            tenant = _claim(token, "tid")
            if tenant != self.tenant_id:
                raise Unauthenticated(
                    f"wrong tenant: the token is from tenant {_shown(tenant)}, not {self.tenant_id}"
                ) from exc
            raise Unauthenticated(
                f"wrong issuer: {_shown(_claim(token, 'iss'))} is not {' or '.join(self.issuers)}"
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("bad signature: the token was not signed by the issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"incomplete token: no {exc.claim} claim") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated(f"token not valid yet: {_plain(str(exc))}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {_plain(str(exc))}") from exc
        if claims["tid"] != self.tenant_id:
            tenant = _shown(claims["tid"])
            raise Unauthenticated(
                f"wrong tenant: the token is from tenant {tenant}, not {self.tenant_id}"
            )
        return _principal(claims)


CLAIM_SHOWN = 100  # characters of a sender's claim quoted in a refusal


def _plain(text: str, limit: int = 2 * CLAIM_SHOWN) -> str:
    """The sender's text as a refusal may quote it: printable characters only, and short
    (a refusal's reason goes into the audit and the log)."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _shown(value: Any) -> str:
    """A claim (or header field) of the token, quoted in a refusal: see `_plain`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(_plain(text, CLAIM_SHOWN))


def _claim(token: str, name: str) -> Any:
    """A claim of a token whose signature has been checked, to explain a refusal."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.InvalidTokenError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _principal(claims: dict[str, Any]) -> Principal:
    object_id = _text(claims.get("oid"))
    if object_id is None:
        raise Unauthenticated("incomplete token: the oid claim is not a string")
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("invalid token: roles is not a list of names")
    return Principal(
        object_id=object_id,
        name=_text(claims.get("name")),
        upn=_text(claims.get("preferred_username")) or _text(claims.get("upn")),
        token_id=_text(claims.get("uti")) or _text(claims.get("jti")),
        tenant_id=str(claims["tid"]),
        roles=tuple(roles),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )
