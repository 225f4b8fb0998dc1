"""adapters/identity.py and adapters/local_issuer.py: tokens as Entra ID issues them, checked
by the one verifier; Entra's keys served over real HTTP on 127.0.0.1, rotated under it."""

from __future__ import annotations

import json
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.identity import (
    JwtVerifier,
    entra_issuers,
    entra_jwks_uri,
)
from adapters.local_issuer import LOCAL_TENANT_ID, LocalIssuer, object_id_for, public_jwk
from orchestrator.ports import IdentityUnavailable, Unauthenticated
from orchestrator.settings import LOCAL_API_AUDIENCE

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
API_URI = "api://retrain-orchestrator"
API_CLIENT_ID = "6e8f0b7c-1d2a-4c3b-9e5f-0a1b2c3d4e5f"
V2_ISSUER, V1_ISSUER = entra_issuers(TENANT)


# --------------------------------------------------------------------------- Entra-like keys


@dataclass
class SigningKey:
    """An RSA key pair standing in for one of Entra's signing keys."""

    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.private.public_key())

    @property
    def kid(self) -> str:
        return str(self.jwk["kid"])

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        headers = {"kid": kid or self.kid, "typ": "JWT"}
        return jwt.encode(claims, self.private, algorithm="RS256", headers=headers)


def entra_claims(version: str = "2.0", **overrides: Any) -> dict[str, Any]:
    """An access token's claims as Entra ID issues them for a user calling our API."""
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "aud": API_CLIENT_ID if version == "2.0" else API_URI,
        "iss": V2_ISSUER if version == "2.0" else V1_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aio": "AWQAm/8TAAAA",
        "azp" if version == "2.0" else "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "name": "Ana Lead",
        "oid": "3f1c9d5e-2b7a-4e8f-9c0d-1a2b3c4d5e6f",
        "roles": ["Promotion.Approve"],
        "scp": "user_impersonation",
        "sub": "l3Dx0wWkxFV0qbiQvCvnB1Q0yC4o8qjSYDbKVXxcrIo",
        "tid": TENANT,
        "uti": "AbCdEfGhIjKlMnOpQrStUv",
        "ver": version,
    }
    if version == "2.0":
        claims["preferred_username"] = "ana@contoso.com"
    else:
        claims["upn"] = "ana@contoso.com"
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


class JwksServer:
    """Entra's discovery keys endpoint on 127.0.0.1: serves `keys`, counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.failing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                if server.failing or self.path != f"/{TENANT}/discovery/v2.0/keys":
                    self.send_error(503 if server.failing else 404)
                    return
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_port}/{TENANT}/discovery/v2.0/keys"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def entra_verifier(server: JwksServer, **options: Any) -> JwtVerifier:
    """`JwtVerifier.for_entra` as configured for our API, its keys fetched from `server`."""
    return JwtVerifier(
        entra_issuers(TENANT), (API_URI, API_CLIENT_ID), TENANT, server.url, **options
    )


# --------------------------------------------------------------------------- Entra ID


def test_entra_urls_are_the_tenants():
    assert entra_jwks_uri(TENANT) == (
        f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    )
    assert entra_issuers(TENANT) == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
    verifier = JwtVerifier.for_entra(TENANT, [API_URI])
    assert (verifier.jwks, verifier.tenant_id, verifier.audiences) == (
        entra_jwks_uri(TENANT),
        TENANT,
        (API_URI,),
    )


def test_v2_and_v1_entra_tokens_give_the_principal(jwks_server: JwksServer):
    key = SigningKey()
    jwks_server.keys = [key.jwk]
    verifier = entra_verifier(jwks_server)
    v2 = verifier.verify(key.sign(entra_claims("2.0")))
    v1 = verifier.verify("Bearer " + key.sign(entra_claims("1.0")))
    for principal in (v2, v1):
        assert principal.object_id == "3f1c9d5e-2b7a-4e8f-9c0d-1a2b3c4d5e6f"
        assert (principal.name, principal.upn, principal.token_id) == (
            "Ana Lead",
            "ana@contoso.com",
            "AbCdEfGhIjKlMnOpQrStUv",
        )
        assert (principal.tenant_id, principal.roles) == (TENANT, ("Promotion.Approve",))
        assert principal.expires_at > datetime.now(UTC)
    assert jwks_server.fetches == 1  # fetched once, then cached


def test_each_bad_entra_token_is_refused_with_its_reason(jwks_server: JwksServer):
    key, stranger = SigningKey(), SigningKey()
    jwks_server.keys = [key.jwk]
    verifier = entra_verifier(jwks_server, refetch_cooldown=0)
    past = int((datetime.now(UTC) - timedelta(hours=2)).timestamp())
    future = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    cases = {
        "missing token": "",
        "malformed token": "not-a-jwt",
        "expired token": key.sign(entra_claims(iat=past, nbf=past, exp=past + 3600)),
        "wrong audience": key.sign(entra_claims(aud="api://someone-elses-api")),
        "wrong issuer": key.sign(entra_claims(iss="https://login.microsoftonline.com/common/")),
        # Another tenant's token, signed by Entra's (shared) keys: its own issuer and tid.
        "wrong tenant": key.sign(
            entra_claims(tid=OTHER_TENANT, iss=f"https://sts.windows.net/{OTHER_TENANT}/")
        ),
        "bad signature": stranger.sign(entra_claims(), kid=key.kid),
        "unknown key": stranger.sign(entra_claims()),
        "incomplete token: no oid": key.sign(entra_claims(oid=None)),
        "incomplete token: no tid": key.sign(entra_claims(tid=None)),
        "incomplete token: no iat": key.sign(entra_claims(iat=None)),
        "token not valid yet": key.sign(entra_claims(nbf=future)),
    }
    for reason, token in cases.items():
        with pytest.raises(Unauthenticated) as refused:
            verifier.verify(token)
        assert refused.value.reason.startswith(reason.split(":")[0]), (reason, refused.value)
        if ":" in reason:
            assert reason.split(": ")[1] in refused.value.reason
    # A tenant-less "wrong tenant" with the right issuer is refused too.
    with pytest.raises(Unauthenticated, match="wrong tenant"):
        verifier.verify(key.sign(entra_claims(tid=OTHER_TENANT)))


def test_only_rs256_is_accepted(jwks_server: JwksServer):
    key = SigningKey()
    jwks_server.keys = [key.jwk]
    verifier = entra_verifier(jwks_server)
    unsigned = jwt.encode(entra_claims(), None, algorithm="none", headers={"kid": key.kid})
    # HS256 keyed with the public modulus: the classic algorithm-confusion forgery.
    confused = jwt.encode(entra_claims(), key.jwk["n"], algorithm="HS256", headers={"kid": key.kid})
    for token in (unsigned, confused):
        with pytest.raises(Unauthenticated, match="bad signature"):
            verifier.verify(token)


def test_a_rotated_key_is_fetched_when_a_token_names_it(jwks_server: JwksServer):
    old, new = SigningKey(), SigningKey()
    jwks_server.keys = [old.jwk]
    verifier = entra_verifier(jwks_server, refetch_cooldown=0)
    assert verifier.verify(old.sign(entra_claims())).upn == "ana@contoso.com"
    assert jwks_server.fetches == 1
    # Entra rotates: the endpoint now publishes the new key. A token signed with it names a kid
    # the cache does not hold, which makes the verifier fetch the keys again.
    jwks_server.keys = [new.jwk, old.jwk]
    assert verifier.verify(new.sign(entra_claims())).upn == "ana@contoso.com"
    assert jwks_server.fetches == 2
    assert verifier.verify(new.sign(entra_claims())).upn == "ana@contoso.com"
    assert verifier.verify(old.sign(entra_claims())).upn == "ana@contoso.com"
    assert jwks_server.fetches == 2  # both known now: from the cache
    # The old key retired: once fetched again, tokens it signs name a key no longer published.
    jwks_server.keys = [new.jwk]
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(SigningKey().sign(entra_claims()))  # an unknown kid: refetch, not there
    assert jwks_server.fetches == 3
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(old.sign(entra_claims()))


def test_unknown_keys_cannot_make_it_fetch_more_than_once_per_cooldown(jwks_server: JwksServer):
    key = SigningKey()
    jwks_server.keys = [key.jwk]
    verifier = entra_verifier(jwks_server, refetch_cooldown=60)
    assert verifier.verify(key.sign(entra_claims())).upn
    for _ in range(20):  # a forger naming made-up kids
        with pytest.raises(Unauthenticated, match="unknown key"):
            verifier.verify(key.sign(entra_claims(), kid=uuid.uuid4().hex))
    assert jwks_server.fetches == 1


def test_keys_that_cannot_be_fetched_are_unavailable_not_a_refusal(jwks_server: JwksServer):
    key = SigningKey()
    jwks_server.failing = True
    verifier = entra_verifier(jwks_server, timeout=5)
    with pytest.raises(IdentityUnavailable):
        verifier.verify(key.sign(entra_claims()))
    jwks_server.failing = False
    jwks_server.keys = [key.jwk]
    assert verifier.verify(key.sign(entra_claims())).upn == "ana@contoso.com"


# --------------------------------------------------------------------------- the local issuer


def test_the_local_issuer_makes_its_key_pair_once_private_and_publishes_the_public_half(
    tmp_path: Path,
):
    issuer = LocalIssuer(tmp_path / "issuer")
    assert not (tmp_path / "issuer").exists()  # nothing until the first token
    token = issuer.mint("ana@contoso.com")
    key_file = tmp_path / "issuer" / "private-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    [jwk] = json.loads(issuer.jwks_path.read_text())["keys"]
    assert set(jwk) == {"kty", "use", "alg", "kid", "n", "e"}  # no private part
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    # Another process (the CLI, the app) uses the same key.
    pem = key_file.read_bytes()
    again = LocalIssuer(tmp_path / "issuer")
    assert jwt.get_unverified_header(again.mint("bob"))["kid"] == jwk["kid"]
    assert key_file.read_bytes() == pem


def test_local_tokens_carry_the_claims_entra_issues(tmp_path: Path):
    issuer = LocalIssuer(tmp_path)
    token = issuer.mint("Ana@Contoso.com", roles=["Promotion.Operate"], lifetime=timedelta(hours=2))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) >= {
        *("iss", "aud", "exp", "nbf", "iat", "tid", "oid", "sub"),
        *("preferred_username", "upn", "name", "roles", "uti", "ver"),
    }
    assert (claims["aud"], claims["tid"], claims["roles"]) == (
        LOCAL_API_AUDIENCE,
        LOCAL_TENANT_ID,
        ["Promotion.Operate"],
    )
    assert claims["exp"] - claims["iat"] == 7200
    # The object id is stable per person (case-insensitive UPN); each token has its own id.
    assert claims["oid"] == object_id_for("ana@contoso.com")
    other = jwt.decode(issuer.mint("ana@contoso.com"), options={"verify_signature": False})
    assert other["oid"] == claims["oid"] and other["uti"] != claims["uti"]


def test_the_same_verifier_checks_local_tokens(tmp_path: Path):
    issuer = LocalIssuer(tmp_path)
    verifier = issuer.verifier()
    assert verifier.audiences == (LOCAL_API_AUDIENCE,)
    with pytest.raises(Unauthenticated, match="unknown key"):  # no issuer yet: nothing is valid
        verifier.verify(SigningKey().sign(entra_claims()))
    principal = verifier.verify(issuer.mint("bob@contoso.com", roles=["Retrain.Request"]))
    assert (principal.upn, principal.name, principal.roles) == (
        "bob@contoso.com",
        "bob",
        ("Retrain.Request",),
    )
    assert principal.tenant_id == LOCAL_TENANT_ID
    # Entra's tokens are not local ones, nor the other way round.
    with pytest.raises(Unauthenticated, match="wrong audience"):
        verifier.verify(issuer.mint("bob", audience=API_URI))
    # The issuer reset (its folder deleted): a new key, which the verifier reads on sight.
    for file in tmp_path.iterdir():
        file.unlink()
    assert verifier.verify(LocalIssuer(tmp_path).mint("carol")).upn == "carol"


def test_a_dead_letter_never_keeps_a_bearer_token():
    from adapters.dead_letters import REDACTED, redact_token

    body = json.dumps({"type": "ApprovalDecision", "auth": "eyJhbGciOi.payload.signature"})
    assert json.loads(redact_token(body))["auth"] == REDACTED
    for untouched in ('{"type": "GateCheck"}', "not json", '["auth"]', '{"auth": null}'):
        assert redact_token(untouched) == untouched


def test_a_refusal_quotes_the_sender_s_text_short_and_printable(tmp_path: Path):
    """A refusal's reason goes into the audit and the log: a forger's kid, audience or issuer
    is quoted at most ~100 printable characters long."""
    issuer = LocalIssuer(tmp_path)
    verifier = issuer.verifier()
    issuer.mint("bob")  # the issuer's key exists
    hostile = "\u202e\x1b[2J\n<script>" + "x" * 50_000
    cases = {
        "unknown key": SigningKey().sign(entra_claims(), kid=hostile),
        "wrong audience": issuer.mint("bob", audience=hostile),
        "wrong issuer": issuer.mint("bob", claims={"iss": hostile}),
        "wrong tenant": issuer.mint("bob", claims={"tid": hostile}),
    }
    for expected, token in cases.items():
        with pytest.raises(Unauthenticated, match=expected) as refused:
            verifier.verify(token)
        reason = refused.value.reason
        assert len(reason) < 300 and reason.isprintable(), (expected, reason[:400])
        assert "\u202e" not in reason and "\x1b" not in reason
