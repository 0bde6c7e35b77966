"""The keys that verify client tokens, read once at start-up.

``GUARDSTREAM_JWT_SECRET`` (HS256) and/or ``GUARDSTREAM_JWT_PUBLIC_KEY`` (an RS256
PEM public key file). On the embedded profile, with neither set, a random
secret is generated once into ``<GUARDSTREAM_STATE_DIR>/gateway-jwt-secret``
(mode 0600) and used by the gateway and by ``guardstream up``'s demo link alike;
delete the file to invalidate every token issued with it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from guardstream.errors import ConfigError
from guardstream.gateway.auth import Keys
from guardstream.settings import Settings

SECRET_FILE = "gateway-jwt-secret"


def hs256_secret(settings: Settings) -> str | None:
    if settings.jwt_secret:
        return settings.jwt_secret.reveal()
    if settings.embedded and settings.jwt_public_key is None:
        return _generated_secret(settings.state_dir / SECRET_FILE)
    return None


def _generated_secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(secrets.token_urlsafe(48) + "\n")
        staged.chmod(0o600)
        try:
            # link() does not replace: when the gateway and `guardstream up` race, the first file wins
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError("GUARDSTREAM_JWT_SECRET", f"{path} is empty; delete it to generate a new secret")
    return secret


def verification_keys(settings: Settings) -> Keys:
    public_key = None
    if settings.jwt_public_key is not None:
        try:
            public_key = settings.jwt_public_key.read_text()
        except OSError as exc:
            raise ConfigError("GUARDSTREAM_JWT_PUBLIC_KEY", f"cannot read {settings.jwt_public_key}: {exc}") from exc
    secret = hs256_secret(settings)
    if not secret and not public_key:
        raise ConfigError("GUARDSTREAM_JWT_SECRET", "set GUARDSTREAM_JWT_SECRET or GUARDSTREAM_JWT_PUBLIC_KEY")
    if not settings.embedded and settings.jwt_issuer is None:
        # a token is only as trustworthy as whoever minted it: production names the one it accepts
        raise ConfigError("GUARDSTREAM_JWT_ISSUER", "required on the production profile: the issuer (iss) "
                          "every client token must name")
    return Keys(settings.jwt_audience, secret, public_key, issuer=settings.jwt_issuer,
                max_lifetime_s=settings.jwt_max_lifetime_s)
