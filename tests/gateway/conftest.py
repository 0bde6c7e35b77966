"""One gateway process for the gateway tests, on the session's broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_support import GatewayProcess, start_gateway

from guardstream.settings import Settings


@pytest.fixture(scope="session")
def gateway(applied: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start_gateway(applied, tmp_path_factory.mktemp("gateway") / "gateway.log")
    yield process
    process.stop()
