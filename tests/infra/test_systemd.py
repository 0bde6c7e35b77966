"""infra/systemd: one template unit per component, hardened, and accepted by systemd-analyze verify."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guardstream.infra.components import COMPONENTS

UNITS = Path(__file__).resolve().parents[2] / "infra" / "systemd"
INSTALLED = "/opt/guardstream/.venv/bin/guardstream"
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX")


def _unit(name):
    return (UNITS / f"guardstream-{name}@.service").read_text()


def test_every_component_has_a_template_unit_that_runs_its_command():
    names = {c.name for c in COMPONENTS}
    found = {p.name.removeprefix("guardstream-").removesuffix("@.service") for p in UNITS.glob("*@.service")}
    assert found == names
    for component in COMPONENTS:
        text = _unit(component.name)
        assert re.search(rf"^ExecStart={re.escape(INSTALLED)} {re.escape(' '.join(component.command))}$", text, re.M)
        assert "EnvironmentFile=/etc/guardstream/guardstream.env" in text
        assert f"EnvironmentFile=-/etc/guardstream/{component.name}-%i.env" in text
        assert "Restart=on-failure" in text and "After=network-online.target guardstream-setup.service" in text
        for line in HARDENING:
            assert re.search(rf"^{re.escape(line)}$", text, re.M), (component.name, line)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    here = str(Path(sys.executable).with_name("guardstream"))
    for path in UNITS.glob("*.service"):
        # an instance of each template, with the command of this checkout (verify wants it executable)
        (tmp_path / path.name.replace("@.", "@1.")).write_text(path.read_text().replace(INSTALLED, here))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr, result.stderr
