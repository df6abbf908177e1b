"""trio_ws.speedups: ACTIVE says whether frames are masked in C, and REASON why not, in each case
where the extension is missing: a source tree where it was not built, an install without it,
a build that does not load. Each case runs in a fresh interpreter, on a copy of the package."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h11
import trio
import wsproto

import trio_ws
import trio_ws.speedups
from trio_ws import _masking

PACKAGE = Path(trio_ws.__file__).resolve().parent

REPORT = (
    "import json, trio_ws.speedups as s, trio_ws._masking as m; "
    "print(json.dumps([s.ACTIVE, s.REASON, m.mask is None, s.__file__]))"
)


def _copy_package(root: Path, *, c_source: bool) -> Path:
    """The package's Python files, without any build of the extension; with its C source or
    without (a source tree, or an install from the pure-Python wheel)."""
    ignore = ["__pycache__", "*.so", "*.pyd"] + ([] if c_source else ["*.c"])
    shutil.copytree(PACKAGE, root / "trio_ws", ignore=shutil.ignore_patterns(*ignore))
    return root / "trio_ws"


def _report(cwd: Path) -> tuple[bool, str | None]:
    """ACTIVE and REASON as `python -c` started in ``cwd`` sees them; it imports trio_ws from
    there, as Python started in a checkout's root does."""
    # -S: no .pth file runs, so no editable install's import hook can map trio_ws._speedups to
    # the checkout's build; the dependencies come from PYTHONPATH, after the working directory.
    homes = {str(Path(module.__file__ or "").parent.parent) for module in (trio, wsproto, h11)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sorted(homes))}
    result = subprocess.run(
        [sys.executable, "-S", "-c", REPORT],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    active, reason, masks_in_python, file = json.loads(result.stdout)
    assert Path(file).resolve() == (cwd / "trio_ws" / "speedups.py").resolve()
    assert masks_in_python is not active  # the flag tells what _masking does
    return active, reason


def test_active_says_whether_the_extension_imports() -> None:
    """In this process: ACTIVE is whether trio_ws._speedups imports, and REASON is None only
    when it is True."""
    built = importlib.util.find_spec("trio_ws._speedups") is not None
    assert trio_ws.speedups.ACTIVE is built is (_masking.mask is not None)
    assert (trio_ws.speedups.REASON is None) is built


def test_a_source_tree_without_the_build_says_how_to_build_it(tmp_path: Path) -> None:
    """Python started in a checkout's root imports its source tree: without the extension
    built in place, REASON says so and gives the command that builds it."""
    package = _copy_package(tmp_path, c_source=True)
    active, reason = _report(tmp_path)
    assert active is False
    assert reason is not None
    assert f"imported from a source tree ({package.resolve()})" in reason
    assert "python setup.py build_ext --inplace" in reason


def test_an_install_without_the_extension_says_where_it_came_from(tmp_path: Path) -> None:
    """Installed without the extension (no C source next to it, as from a wheel): REASON says
    which installs leave it out."""
    _copy_package(tmp_path, c_source=False)
    active, reason = _report(tmp_path)
    assert active is False
    assert reason is not None
    assert "installed without its C extension" in reason
    assert "TRIO_WS_NO_EXTENSION=1" in reason


def test_an_extension_that_does_not_load_says_why(tmp_path: Path) -> None:
    """A build that cannot be loaded (another platform's, a corrupt file): REASON carries the
    loader's message, and trio_ws still works, in pure Python."""
    package = _copy_package(tmp_path, c_source=True)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"_speedups{suffix}").write_bytes(b"not a shared library")
    active, reason = _report(tmp_path)
    assert active is False
    assert reason is not None
    assert reason.startswith(f"trio_ws._speedups ({package.resolve()}) failed to import: ")
