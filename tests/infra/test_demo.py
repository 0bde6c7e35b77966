"""The local stack's demo token: signed with the generated secret, for the demo fleet's tenants."""

import os

from guardstream.gateway.auth import verify
from guardstream.gateway.keys import SECRET_FILE, hs256_secret, verification_keys
from guardstream.infra.demo import demo_token
from guardstream.settings import Settings

NOW = 1_795_000_000.0


def test_embedded_profile_generates_one_secret_in_the_state_dir(tmp_path) -> None:
    settings = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_STATE_DIR": str(tmp_path)})
    first = hs256_secret(settings)
    assert first and first == hs256_secret(settings)
    assert os.stat(tmp_path / SECRET_FILE).st_mode & 0o777 == 0o600
    principal = verify(demo_token(settings, NOW), verification_keys(settings), NOW + 11 * 3600)
    assert principal.roles == {"noc", "operator"} and {"acme", "globex"} <= principal.tenants
    assert principal.expires_at == NOW + 12 * 3600
