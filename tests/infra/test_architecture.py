"""The architecture page and the layering rules (``infra/architecture.py``), read from the source."""

from __future__ import annotations

import pytest

from guardstream.infra.architecture import (
    BY_NAME,
    LAZY,
    MODULE_LEVEL,
    PAGE,
    ROOT,
    TYPE_CHECKING_ONLY,
    Import,
    allowed,
    architecture_markdown,
    imports_in,
    package_of,
    read_imports,
    violations,
)

REGENERATE = "python -m guardstream.infra.architecture"


def test_the_architecture_page_is_the_graph_in_the_code():
    assert (ROOT / PAGE).read_text() == architecture_markdown(ROOT), f"{PAGE} is out of date: run {REGENERATE}"


def test_every_import_keeps_to_the_layers():
    assert violations(read_imports(ROOT)[1]) == []


def test_every_module_the_entry_point_registers_exists():
    modules, imports = read_imports(ROOT)
    registered = {imp.imported for imp in imports if imp.how == BY_NAME}
    assert registered and registered <= set(modules)


# -- the pure parts, case by case ---------------------------------------------------------------

KNOWN = {"guardstream", "guardstream.settings", "guardstream.errors", "guardstream.infra", "guardstream.infra.topics",
         "guardstream.infra.ops", "guardstream.infra.ops.dlq", "guardstream.infra.ops.commands",
         "guardstream.streams", "guardstream.streams.geofence", "guardstream.cli"}


@pytest.mark.parametrize("module, source, expected", [
    ("guardstream.streams.worker", "from guardstream.settings import Settings",
     {Import("guardstream.streams.worker", "guardstream.settings")}),
    ("guardstream.streams.worker", "import guardstream.errors as errors",
     {Import("guardstream.streams.worker", "guardstream.errors")}),
    ("guardstream.infra.commands", "from guardstream.infra import topics",
     {Import("guardstream.infra.commands", "guardstream.infra.topics")}),
    ("guardstream.infra.ops.commands", "from .dlq import Selection",
     {Import("guardstream.infra.ops.commands", "guardstream.infra.ops.dlq")}),
    ("guardstream.infra.ops.commands", "from .. import topics",
     {Import("guardstream.infra.ops.commands", "guardstream.infra.topics")}),
    ("guardstream.streams.worker", "def run():\n    from guardstream.settings import Settings\n",
     {Import("guardstream.streams.worker", "guardstream.settings", LAZY)}),
    ("guardstream.streams.worker", "class W:\n    async def run(self):\n        import guardstream.errors\n",
     {Import("guardstream.streams.worker", "guardstream.errors", LAZY)}),
    ("guardstream.streams.worker",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from guardstream.settings import Settings\n",
     {Import("guardstream.streams.worker", "guardstream.settings", TYPE_CHECKING_ONLY)}),
    ("guardstream.streams.worker", "import json\nimport paho.mqtt.client as mqtt\nfrom shapely import Point", set()),
    ("guardstream.cli",
     'from guardstream.errors import ConfigError\nCOMMAND_MODULES = ("guardstream.infra.topics",)',
     {Import("guardstream.cli", "guardstream.errors"), Import("guardstream.cli", "guardstream.infra.topics", BY_NAME)}),
])
def test_imports_in_a_module(module, source, expected):
    assert imports_in(module, source, KNOWN) == expected


def test_a_relative_import_in_a_package_init_starts_from_the_package_itself():
    assert imports_in("guardstream.infra.ops", "from .dlq import replay", KNOWN, is_package=True) == {
        Import("guardstream.infra.ops", "guardstream.infra.ops.dlq")}


@pytest.mark.parametrize("module, package", [
    ("guardstream", "core"),
    ("guardstream.settings", "core"),
    ("guardstream.cli", "cli"),
    ("guardstream.schemas.codec", "schemas"),
    ("guardstream.connectors.bridge", "connectors"),
    ("guardstream.streams", "streams"),
    ("guardstream.infra.ops.dlq", "infra"),
    ("guardstream.infra.lag", "infra"),
])
def test_the_package_of_a_module(module, package):
    assert package_of(module) == package


@pytest.mark.parametrize("importer, imported, expected", [
    ("core", "core", True),
    ("core", "schemas", False),
    ("schemas", "core", True),
    ("schemas", "streams", False),
    ("streams", "schemas", True),
    ("streams", "core", True),
    ("streams", "infra", False),
    ("connectors", "streams", True),  # the one sideways arrow allowed
    ("streams", "connectors", False),
    ("gateway", "streams", False),
    ("gateway", "sinks", False),
    ("sinks", "gateway", False),
    ("infra", "gateway", True),
    ("infra", "cli", False),
    ("cli", "infra", True),
])
def test_which_package_may_import_which(importer, imported, expected):
    assert allowed(importer, imported) is expected


@pytest.mark.parametrize("imp, broken", [
    (Import("guardstream.streams.worker", "guardstream.settings"), False),
    (Import("guardstream.settings", "guardstream.infra.topics", LAZY), True),
    (Import("guardstream.gateway.protocol", "guardstream.sinks.rows"), True),
    (Import("guardstream.cli", "guardstream.infra.ops.commands", BY_NAME), False),
    (Import("guardstream.cli", "guardstream.infra.ops.commands", MODULE_LEVEL), True),
    (Import("guardstream.cli", "guardstream.settings", LAZY), False),
])
def test_violations_name_each_import_that_breaks_the_layers(imp, broken):
    found = violations([imp])
    assert bool(found) is broken
    if broken:
        assert found[0].startswith(f"{imp.importer} imports {imp.imported}")
