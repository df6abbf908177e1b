"""The documentation builds with warnings as errors, offline, and documents every public name."""

from __future__ import annotations

import importlib
import importlib.util
import posixpath
import subprocess
import sys
from pathlib import Path

import pytest

import trio_ws

pytest.importorskip("sphinx")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = [
    "trio_ws.auth",
    "trio_ws.broadcasting",
    "trio_ws.cli",
    "trio_ws.client",
    "trio_ws.connection",
    "trio_ws.exceptions",
    "trio_ws.frames",
    "trio_ws.http",
    "trio_ws.redis",
    "trio_ws.router",
    "trio_ws.server",
    "trio_ws.speedups",
    "trio_ws.stats",
    "trio_ws.testing",
    "trio_ws.workers",
]


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the HTML docs once, the way CI does: -W (warnings are errors) and -n (nitpicky)."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-n",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / ".doctrees"),
            str(DOCS),
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx failed:\n{result.stdout}\n{result.stderr}"
    return out


def _documented_names(html: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    data = getattr(inventory, "data", inventory)  # Sphinx 8.2+ returns an object
    return {name for role, items in data.items() if role.startswith("py:") for name in items}


def test_docs_build_without_warnings(built_docs: Path) -> None:
    """sphinx -W -n succeeds: every cross-reference resolves, with no network access needed."""
    assert (built_docs / "index.html").is_file()


def test_every_public_name_is_documented(built_docs: Path) -> None:
    """Every name in a public module's __all__, and in trio_ws.__all__, has a reference entry."""
    documented = _documented_names(built_docs)
    missing = [
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in documented
    ]
    for name in trio_ws.__all__:
        home = getattr(getattr(trio_ws, name), "__module__", None)
        if not isinstance(home, str) or not home.startswith("trio_ws."):
            home = "trio_ws"  # a value such as __version__, documented on the package
        if f"{home}.{name}" not in documented:
            missing.append(f"trio_ws.{name} (from {home})")
    assert not missing, f"not in the reference: {missing}"


def test_intersphinx_inventories_are_current() -> None:
    """docs/_inventories/*.inv are what docs/_inventories/generate.py writes today."""
    spec = importlib.util.spec_from_file_location(
        "_docs_inventories", DOCS / "_inventories" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for filename, (project, version, entries) in generate.INVENTORIES.items():
        expected = generate.render(project, version, entries)
        assert (DOCS / "_inventories" / filename).read_bytes() == expected, (
            f"run python docs/_inventories/generate.py to update {filename}"
        )
