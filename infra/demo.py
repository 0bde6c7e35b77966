"""The demo stack's dashboard token: who the local stack lets look at its simulated fleet."""

from __future__ import annotations

import time

from guardstream.connectors.simulator import load_demo_fences
from guardstream.errors import ConfigError
from guardstream.gateway.auth import ROLE_NOC, ROLE_OPERATOR, issue
from guardstream.gateway.keys import hs256_secret
from guardstream.settings import Settings

DEMO_TTL_S = 12 * 3600


def demo_token(settings: Settings, now: float | None = None) -> str:
    """A 12-hour token of the demo stack: roles noc and operator, the demo fleet's tenants.

    Signed with ``GUARDSTREAM_JWT_SECRET``, or on the embedded profile with the
    secret generated into the state directory (:func:`keys.hs256_secret`).
    """
    secret = hs256_secret(settings)
    if not secret:
        raise ConfigError("GUARDSTREAM_JWT_SECRET", "a demo token needs an HS256 secret")
    tenants = {str((f.get("properties") or {}).get("tenant")) for f in load_demo_fences()["features"]}
    tenants.add(settings.tenant_default)
    return issue(secret, "demo", tenants, (ROLE_NOC, ROLE_OPERATOR), settings.jwt_audience,
                 time.time() if now is None else now, DEMO_TTL_S)
