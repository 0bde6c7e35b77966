"""Who is connecting: a JWT becomes a :class:`Principal`, or a refusal with a reason.

Pure: the clock comes in as an argument and keys as plain text, so the whole
matrix of good and bad tokens is tested without a server. PyJWT checks the
signature and the audience; expiry and not-before are checked here against the
given time, with :data:`LEEWAY_S` for clock skew between issuer and gateway.

A token may arrive three ways, looked at in this order: the ``Authorization:
Bearer`` header (non-browser clients), a ``bearer.<token>`` WebSocket
subprotocol offered next to ``guardstream.v1`` (browsers cannot set headers
on a WebSocket), or ``?token=`` in the URL (the dashboard page's own link).

Claims: ``sub`` (who; becomes the ``actor`` of alert actions), ``tenants`` (a
list) or ``tenant`` (one), ``roles``: ``noc`` sees every tenant, ``operator``
may acknowledge and resolve its tenants' alerts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from guardstream.errors import ConfigError, InputError

ROLE_NOC = "noc"
ROLE_OPERATOR = "operator"
SUBPROTOCOL = "guardstream.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
LEEWAY_S = 10.0


@dataclass(frozen=True)
class Principal:
    subject: str
    tenants: frozenset[str]
    roles: frozenset[str]
    expires_at: float  # epoch seconds
    # derived once: sees() is asked for every event delivered to every client
    noc: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "noc", ROLE_NOC in self.roles)

    def sees(self, tenant: str) -> bool:
        """Whether the principal sees ``tenant``'s events: its own tenants, every tenant for role noc."""
        return self.noc or tenant in self.tenants

    def may_act_on(self, tenant: str) -> bool:
        """May acknowledge, resolve or dismiss an alert of ``tenant``."""
        return (ROLE_OPERATOR in self.roles or self.noc) and self.sees(tenant)


class AuthRefused(InputError):
    """A connection or request refused before it is served; ``reason`` picks the close code."""

    reason = "invalid_token"


@dataclass(frozen=True)
class Keys:
    """What verifies a token: an HS256 secret, an RS256 public key (PEM), or both."""

    audience: str
    hs256_secret: str | None = None
    rs256_public_key: str | None = None
    issuer: str | None = None  # the iss every token must name; None: any
    max_lifetime_s: float | None = None  # the longest a token may be valid; None: no limit

    def for_algorithm(self, alg: object) -> str | None:
        # the key is picked by the token's algorithm and never shared between the two, so an
        # RS256 public key can never be misused as an HS256 secret
        return {"HS256": self.hs256_secret, "RS256": self.rs256_public_key}.get(alg) if isinstance(alg, str) else None


# -- where the token is ------------------------------------------------------------------

def token_from_request(headers: Iterable[tuple[str, str]], query: str) -> str:
    """The token of a WebSocket or HTTP request; :class:`AuthRefused` ``missing_token`` without one."""
    pairs = [(name.lower(), value) for name, value in headers]
    for name, value in pairs:
        if name == "authorization":
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    for name, value in pairs:
        if name == "sec-websocket-protocol":
            for offered in value.split(","):
                offered = offered.strip()
                if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(offered) > len(TOKEN_SUBPROTOCOL_PREFIX):
                    return offered[len(TOKEN_SUBPROTOCOL_PREFIX):]
    values = parse_qs(query).get("token")
    if values and values[0]:
        return values[0]
    raise AuthRefused("no token: send Authorization: Bearer, a bearer.<token> subprotocol or ?token=",
                      reason="missing_token")


def origin_allowed(origin: str | None, host: str | None, secure: bool, allowed: frozenset[str],
                   listen_host: str) -> bool:
    """Browsers send Origin; the allowlist passes, and so does the page's own origin (the request's
    scheme and Host) when that Host names this server in a way no other site can borrow.

    A request without Origin is not from a browser page, so there is no page to protect it from.
    Host alone proves nothing: a page of evil.example whose name is re-pointed at this address
    (DNS rebinding) sends ``Host: evil.example`` and ``Origin: http://evil.example`` alike.
    """
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    own = f"{'https' if secure else 'http'}://{host.lower()}"
    return origin == own and names_this_server(host, listen_host)


def names_this_server(host: str, listen_host: str) -> bool:
    """Whether a Host header can only have been meant for this server: an IP address, ``localhost``,
    or the name the gateway listens on (``GUARDSTREAM_GATEWAY_HOST``). Any other name must be in
    ``GUARDSTREAM_GATEWAY_ORIGINS``."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if not name:
        return False
    if name in ("localhost", listen_host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def parse_origins(raw: str) -> frozenset[str]:
    """The allowlist of ``GUARDSTREAM_GATEWAY_ORIGINS``; :class:`ConfigError` on an entry that is no origin."""
    out = set()
    for entry in (e.strip().rstrip("/").lower() for e in raw.split(",")):
        if not entry:
            continue
        scheme, sep, rest = entry.partition("://")
        if entry != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise ConfigError("GUARDSTREAM_GATEWAY_ORIGINS", f"{entry!r} is not scheme://host[:port]")
        out.add(entry)
    return frozenset(out)


# -- what the token says -----------------------------------------------------------------

def verify(token: str, keys: Keys, now: float) -> Principal:
    """The principal of a valid token; :class:`AuthRefused` with the reason otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise AuthRefused(f"not a JWT: {exc}", reason="malformed_token") from exc
    alg = header.get("alg")
    key = keys.for_algorithm(alg)
    if not key:
        raise AuthRefused(f"algorithm {alg!r} is not accepted here", reason="bad_algorithm")
    try:
        required = ["exp", "sub", "aud"] + (["iss"] if keys.issuer is not None else [])
        claims = jwt.decode(token, key, algorithms=[alg], audience=keys.audience, issuer=keys.issuer,
                            options={"require": required, "verify_exp": False,
                                     "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidAudienceError as exc:
        raise AuthRefused(f"token is not for audience {keys.audience!r}", reason="wrong_audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthRefused(f"token is not issued by {keys.issuer!r}", reason="wrong_issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthRefused(f"token lacks claim {exc.claim!r}", reason="missing_claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthRefused("signature does not verify", reason="bad_signature") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthRefused(f"token does not decode: {exc}", reason="malformed_token") from exc
    return principal_from_claims(claims, now, keys.max_lifetime_s)


def principal_from_claims(claims: Mapping[str, Any], now: float, max_lifetime_s: float | None = None) -> Principal:
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _number(exp) or any(t is not None and not _number(t) for t in (nbf, iat)):
        raise AuthRefused("exp, nbf and iat must be numbers", reason="bad_claims")
    if now >= exp + LEEWAY_S:
        raise AuthRefused("token has expired", reason="token_expired")
    if nbf is not None and now + LEEWAY_S < nbf:
        raise AuthRefused("token is not valid yet", reason="not_yet_valid")
    if iat is not None and now + LEEWAY_S < iat:
        raise AuthRefused("token is issued in the future (iat): a wrong clock or a forged token",
                          reason="issued_in_future")
    if max_lifetime_s is not None:
        start = iat if iat is not None else nbf if nbf is not None else now
        if exp - start > max_lifetime_s:
            raise AuthRefused(f"token is valid for {exp - start:.0f}s, longer than the {max_lifetime_s:.0f}s allowed",
                              reason="lifetime_too_long")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthRefused("sub must be a non-empty string", reason="bad_claims")
    return Principal(subject, _strings(claims, "tenants", "tenant"), _strings(claims, "roles", "role"), float(exp))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(claims: Mapping[str, Any], plural: str, singular: str) -> frozenset[str]:
    value = claims.get(plural, claims.get(singular))
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthRefused(f"{plural} must be a list of strings", reason="bad_claims")
    return frozenset(value)


# -- issuing (the demo stack and tests) --------------------------------------------------

def issue(secret: str, subject: str, tenants: Iterable[str], roles: Iterable[str], audience: str,
          now: float, ttl_s: float, issuer: str | None = None) -> str:
    """An HS256 token with the claims this gateway reads."""
    claims = {"sub": subject, "tenants": sorted(tenants), "roles": sorted(roles), "aud": audience,
              "iat": int(now), "nbf": int(now), "exp": int(now + ttl_s)}
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
