"""The package as it is built and installed: what the sdist holds, what type checkers see.

The tests import the checkout (pytest puts the project root first on sys.path); the processes
they start (examples, the docs build, benchmarks) must import the same copy. The sdist and the
editable install are built without build isolation, so that nothing is downloaded: the test
extra brings setuptools and build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import trio_ws

ROOT = Path(__file__).resolve().parent.parent

# What the tests read or run, besides the package: the examples (test_examples.py, and the docs
# include them), the docs with their offline inventories (test_docs.py), the benchmarks
# (test_benchmarks.py).
NEEDED_BY_TESTS = [
    "tests/*.py",
    "examples/*.py",
    "docs/conf.py",
    "docs/**/*.rst",
    "docs/_inventories/*.inv",
    "benchmarks/*.py",
]
PACKAGE = ["trio_ws/*.py", "trio_ws/py.typed", "trio_ws/_speedups.pyi", "trio_ws/_speedups.c"]
PROJECT = ["pyproject.toml", "setup.py", "README.md", "LICENSE"]


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``command`` to completion; its output, or a failure that shows it."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} exited with {result.returncode}:\n{output[-5000:]}"
    return output


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's sdist, unpacked: the directory that holds pyproject.toml."""
    out = tmp_path_factory.mktemp("sdist")
    build = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out)]
    _run([*build, str(ROOT)], cwd=ROOT)
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later; ours has no odd member
            tar.extraction_filter = tarfile.data_filter
        tar.extractall(out)
    (unpacked,) = (path for path in out.iterdir() if path.is_dir())
    return unpacked


def test_tests_and_the_processes_they_start_import_the_checkout(tmp_path: Path) -> None:
    """trio_ws comes from this checkout, in the tests and in a child Python alike, so that both
    run the same code, with the same C extension or none (PYTHONPATH or an editable install)."""
    here = Path(trio_ws.__file__).resolve()
    assert here == ROOT / "trio_ws" / "__init__.py"
    child = _run([sys.executable, "-c", "import trio_ws; print(trio_ws.__file__)"], tmp_path)
    elsewhere = "child processes import another trio_ws: install -e, or set PYTHONPATH"
    assert Path(child.strip()).resolve() == here, elsewhere


@pytest.mark.slow
def test_sdist_holds_what_its_tests_read(sdist: Path) -> None:
    """Every test, example, docs page and benchmark script of the checkout is in the sdist, with
    the package, its C source and the license; no build output is."""
    patterns = [*NEEDED_BY_TESTS, *PACKAGE, *PROJECT]
    wanted = {str(path.relative_to(ROOT)) for pattern in patterns for path in ROOT.glob(pattern)}
    assert "tests/conftest.py" in wanted and "examples/echo.py" in wanted
    held = {str(path.relative_to(sdist)) for path in sdist.rglob("*") if path.is_file()}
    assert sorted(wanted - held) == []
    assert [name for name in held if name.endswith((".so", ".pyc"))] == []


@pytest.mark.slow
def test_sdists_tests_pass_from_the_unpacked_sdist(sdist: Path) -> None:
    """The sdist's test suite (all but the slow tests) passes in the unpacked sdist, its C
    extension built in place as .ci/run builds the checkout's."""
    _run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=sdist)
    env = {**os.environ, "PYTHONPATH": str(sdist)}  # child processes too import the sdist's copy
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    output = _run(command, cwd=sdist, env=env)
    assert " passed" in output


@pytest.mark.slow
def test_editable_install_is_visible_to_mypy_and_pyright(tmp_path: Path) -> None:
    """After the README's `pip install -e .`, mypy and pyright resolve trio_ws from a file
    outside the project: setuptools wrote a path entry, not an import hook they cannot run."""
    pytest.importorskip("mypy", reason="mypy comes with the lint extra")
    pytest.importorskip("pyright", reason="pyright comes with the lint extra")
    project = tmp_path / "project"  # a copy: the install builds the C extension in place
    project.mkdir()
    for name in PROJECT:
        shutil.copy2(ROOT / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(ROOT / "trio_ws", project / "trio_ws", ignore=ignore)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-index", "--no-deps", "--no-build-isolation", "--ignore-installed"]
    _run([*pip, *offline, "--prefix", str(venv), "--editable", str(project)], cwd=tmp_path)

    user = tmp_path / "user"
    user.mkdir()
    (user / "app.py").write_text(
        "import trio_ws\n\n"
        "async def main() -> None:\n"
        '    async with trio_ws.connect("ws://localhost/") as ws:\n'
        "        reveal_type(ws)\n"
    )
    python = str(venv / "bin" / "python")
    pyright = _run([sys.executable, "-m", "pyright", "--pythonpath", python, "app.py"], user)
    assert 'Type of "ws" is "ClientConnection"' in pyright
    mypy = [sys.executable, "-m", "mypy", "--python-executable", python]
    output = _run([*mypy, "--cache-dir", str(tmp_path / "mypy"), "app.py"], user)
    assert 'Revealed type is "trio_ws.client.ClientConnection"' in output
