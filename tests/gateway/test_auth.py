"""auth: tokens to principals, refusal reasons, where a token is found, origins, demo token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from guardstream.errors import ConfigError
from guardstream.gateway.auth import (LEEWAY_S, AuthRefused, Keys, Principal, issue, origin_allowed, parse_origins,
                                      principal_from_claims, token_from_request, verify)
from guardstream.gateway.keys import SECRET_FILE, hs256_secret, verification_keys
from guardstream.gateway.protocol import CLOSE_CODES
from guardstream.settings import Settings

NOW = 1_795_000_000.0
SECRET = "s3cret-for-tests-of-the-gateway-0123456789"
KEYS = Keys("guardstream", SECRET)


def token(secret: str = SECRET, alg: str = "HS256", **claims: object) -> str:
    base = {"sub": "alice", "tenants": ["acme"], "roles": ["operator"], "aud": "guardstream",
            "exp": NOW + 3600, "nbf": NOW - 10}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm=alg)


@pytest.mark.parametrize(("make", "reason", "code"), [
    (lambda: token(exp=NOW - 3600), "token_expired", 4408),
    (lambda: token(secret="another-secret-of-thirty-two-bytes-or-more"), "bad_signature", 4401),
    (lambda: token(aud="someone-else"), "wrong_audience", 4401),
    (lambda: token(nbf=NOW + 3600), "not_yet_valid", 4401),
    (lambda: token(exp=None), "missing_claim", 4401),
    (lambda: token(sub=None), "missing_claim", 4401),
    (lambda: token(aud=None), "missing_claim", 4401),
    (lambda: token(tenants="acme globex", roles=[1]), "bad_claims", 4401),
    (lambda: token(exp="tomorrow"), "bad_claims", 4401),
    (lambda: "not-a-jwt", "malformed_token", 4401),
    (lambda: token(secret=SECRET * 2, alg="HS512"), "bad_algorithm", 4401),
    (lambda: jwt.encode({"sub": "x"}, None, algorithm="none"), "bad_algorithm", 4401),
])
def test_every_bad_token_is_refused_with_its_reason_and_close_code(make, reason: str, code: int) -> None:
    with pytest.raises(AuthRefused) as refused:
        verify(make(), KEYS, NOW)
    assert refused.value.reason == reason
    assert CLOSE_CODES[reason] == code


def test_a_good_token_names_subject_tenants_and_roles() -> None:
    principal = verify(token(tenants=["acme", "globex"], roles=["operator"]), KEYS, NOW)
    assert principal == Principal("alice", frozenset({"acme", "globex"}), frozenset({"operator"}), NOW + 3600)
    assert verify(token(tenants=None, tenant="acme"), KEYS, NOW).tenants == {"acme"}


@pytest.mark.parametrize(("tenants", "roles", "tenant", "sees", "acts"), [
    (["acme"], [], "acme", True, False),
    (["acme"], ["operator"], "acme", True, True),
    (["acme"], ["operator"], "globex", False, False),
    ([], ["noc"], "globex", True, True),
    ([], [], "acme", False, False),
])
def test_what_a_principal_sees_and_may_act_on(tenants, roles, tenant, sees, acts) -> None:
    principal = principal_from_claims({"sub": "x", "exp": NOW + 60, "tenants": tenants, "roles": roles}, NOW)
    assert (principal.sees(tenant), principal.may_act_on(tenant)) == (sees, acts)


def test_rs256_tokens_verify_with_the_public_key_and_never_as_hs256() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    keys = Keys("guardstream", None, public_pem)
    assert verify(token(secret=private, alg="RS256"), keys, NOW).subject == "alice"
    with pytest.raises(AuthRefused) as refused:  # the public key used as an HMAC secret
        verify(hmac_signed_with(public_pem), keys, NOW)
    assert refused.value.reason == "bad_algorithm"


def hmac_signed_with(key: str) -> str:
    """An HS256 token signed by hand (PyJWT refuses to sign with a PEM key as secret)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "mallory", "aud": "guardstream", "exp": NOW + 60, "roles": ["noc"]}).encode())
    signature = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


@given(st.floats(min_value=-1e6, max_value=1e6))
def test_expiry_is_decided_by_the_given_clock(offset: float) -> None:
    exp = NOW + offset
    try:
        verify(token(exp=exp, nbf=None), KEYS, NOW)
        assert NOW < exp + 10
    except AuthRefused as exc:
        assert exc.reason == "token_expired" and NOW >= exp + 10


@pytest.mark.parametrize(("headers", "query", "expected"), [
    ([("Authorization", "Bearer abc.def.ghi")], "", "abc.def.ghi"),
    ([("authorization", "bearer  tok ")], "token=other", "tok"),
    ([("Sec-WebSocket-Protocol", "guardstream.v1, bearer.abc.def")], "", "abc.def"),
    ([], "x=1&token=q.r.s", "q.r.s"),
    ([("Authorization", "Basic zzz"), ("Sec-WebSocket-Protocol", "guardstream.v1")], "token=t", "t"),
])
def test_the_token_is_found_in_header_subprotocol_or_query(headers, query, expected) -> None:
    assert token_from_request(headers, query) == expected


@pytest.mark.parametrize(("headers", "query"), [
    ([], ""), ([("Authorization", "Bearer ")], "token="), ([("Sec-WebSocket-Protocol", "bearer.")], ""),
])
def test_no_token_is_missing_token(headers, query) -> None:
    with pytest.raises(AuthRefused) as refused:
        token_from_request(headers, query)
    assert refused.value.reason == "missing_token"


ALLOWED = frozenset({"https://ops.example.com"})


@pytest.mark.parametrize(("origin", "host", "secure", "ok"), [
    (None, "gw:8765", False, True),  # not a browser
    ("http://gw:8765", "gw:8765", False, True),  # the dashboard's own page, on the name it listens on
    ("https://gw:8765", "gw:8765", True, True),
    ("http://gw:8765", "gw:8765", True, False),  # own host, other scheme
    ("https://ops.example.com", "gw:8765", False, True),  # allowlisted
    ("https://ops.example.com/", "gw:8765", False, True),
    ("https://evil.example", "gw:8765", False, False),
    ("https://evil.example", None, False, False),
])
def test_origins(origin, host, secure, ok) -> None:
    assert origin_allowed(origin, host, secure, ALLOWED, "gw") is ok


@pytest.mark.parametrize(("origin", "host", "listen", "ok"), [
    # DNS rebinding: evil.example re-pointed at this server; Host and Origin agree, and prove nothing
    ("http://evil.example:8765", "evil.example:8765", "127.0.0.1", False),
    ("http://evil.example:8765", "evil.example:8765", "0.0.0.0", False),
    ("http://127.0.0.1:8765", "127.0.0.1:8765", "127.0.0.1", True),
    ("http://localhost:8765", "localhost:8765", "127.0.0.1", True),
    ("http://[::1]:8765", "[::1]:8765", "::1", True),
    ("http://192.168.1.5:8765", "192.168.1.5:8765", "0.0.0.0", True),  # an address: no name to re-point
    ("http://guards.example:8765", "guards.example:8765", "0.0.0.0", False),  # a name: list it in ORIGINS
    ("http://guards.example:8765", "guards.example:8765", "guards.example", True),  # the name it listens on
    ("https://ops.example.com", "evil.example", "0.0.0.0", True),  # allowlisted origins pass as before
])
def test_the_page_s_own_origin_passes_only_on_a_host_no_other_site_can_borrow(origin, host, listen, ok) -> None:
    assert origin_allowed(origin, host, False, ALLOWED, listen) is ok


def test_origin_allowlist_parses_and_refuses_non_origins() -> None:
    assert parse_origins(" https://a.example , http://b:8080/,") == {"https://a.example", "http://b:8080"}
    assert parse_origins("") == frozenset()
    with pytest.raises(ConfigError):
        parse_origins("https://a.example/path")


def test_issue_round_trips_through_verify() -> None:
    minted = issue(SECRET, "bob", ["globex"], ["noc"], "guardstream", NOW, 60)
    assert verify(minted, KEYS, NOW + 30) == Principal("bob", frozenset({"globex"}), frozenset({"noc"}), NOW + 60)


def test_production_needs_a_key_and_a_set_secret_wins(tmp_path) -> None:
    production = Settings.from_env({"GUARDSTREAM_STATE_DIR": str(tmp_path)})
    assert hs256_secret(production) is None
    with pytest.raises(ConfigError) as missing:
        verification_keys(production)
    assert missing.value.setting == "GUARDSTREAM_JWT_SECRET"
    embedded = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_STATE_DIR": str(tmp_path),
                                  "GUARDSTREAM_JWT_SECRET": "given"})
    assert hs256_secret(embedded) == "given" and not (tmp_path / SECRET_FILE).exists()


def test_the_stack_report_link_carries_a_token_that_verifies(tmp_path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from guardstream.infra.render import dashboard_url
    settings = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_STATE_DIR": str(tmp_path)})
    url = urlsplit(dashboard_url(settings))
    assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:8765", "/")
    verify(parse_qs(url.query)["token"][0], verification_keys(settings), time.time())


STRICT = Keys("guardstream", SECRET, issuer="https://idp.example", max_lifetime_s=86400)


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "https://idp.example"}, None),
    ({"iss": "https://elsewhere.example"}, "wrong_issuer"),
    ({}, "missing_claim"),  # an issuer is configured: a token without iss is refused
    ({"iss": "https://idp.example", "iat": NOW - 60}, None),
    ({"iss": "https://idp.example", "iat": NOW + LEEWAY_S / 2}, None),  # within the clock-skew leeway
    ({"iss": "https://idp.example", "iat": NOW + 3600}, "issued_in_future"),
    ({"iss": "https://idp.example", "iat": "yesterday"}, "bad_claims"),
    ({"iss": "https://idp.example", "iat": NOW, "exp": NOW + 86400}, None),
    ({"iss": "https://idp.example", "iat": NOW, "exp": NOW + 86401}, "lifetime_too_long"),
    ({"iss": "https://idp.example", "iat": None, "nbf": NOW - 10, "exp": 1e20}, "lifetime_too_long"),
    ({"iss": "https://idp.example", "iat": None, "nbf": None, "exp": NOW + 2 * 86400}, "lifetime_too_long"),
])
def test_issuer_issue_time_and_lifetime_are_checked_when_configured(claims, reason) -> None:
    minted = token(**claims)
    if reason is None:
        assert verify(minted, STRICT, NOW).subject == "alice"
        return
    with pytest.raises(AuthRefused) as refused:
        verify(minted, STRICT, NOW)
    assert refused.value.reason == reason and CLOSE_CODES[reason] == 4401


def test_without_an_issuer_or_a_lifetime_cap_any_issuer_and_lifetime_pass() -> None:
    assert verify(token(iss="anyone", exp=NOW + 30 * 86400), KEYS, NOW).subject == "alice"


def test_the_gateway_settings_make_the_keys_strict(tmp_path) -> None:
    settings = Settings.from_env({"GUARDSTREAM_JWT_SECRET": SECRET, "GUARDSTREAM_JWT_ISSUER": "https://idp.example",
                                  "GUARDSTREAM_JWT_MAX_LIFETIME_S": "3600", "GUARDSTREAM_STATE_DIR": str(tmp_path)})
    keys = verification_keys(settings)
    assert (keys.issuer, keys.max_lifetime_s) == ("https://idp.example", 3600)
    assert verification_keys(Settings.from_env({"GUARDSTREAM_JWT_SECRET": SECRET, "GUARDSTREAM_JWT_ISSUER": "i"})
                             ).max_lifetime_s == 86400


def test_production_requires_an_issuer_and_the_embedded_profile_does_not(tmp_path) -> None:
    with pytest.raises(ConfigError) as missing:
        verification_keys(Settings.from_env({"GUARDSTREAM_JWT_SECRET": SECRET}))
    assert missing.value.setting == "GUARDSTREAM_JWT_ISSUER" and "production" in missing.value.detail
    embedded = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_JWT_SECRET": SECRET,
                                  "GUARDSTREAM_STATE_DIR": str(tmp_path)})
    assert verification_keys(embedded).issuer is None
