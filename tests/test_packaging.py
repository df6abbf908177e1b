"""The package as it is built and installed: what the sdist holds, what the wheels hold, that
each installs and works, what type checkers see.

The tests import the checkout (pytest puts the project root first on sys.path); the processes
they start (examples, the docs build, benchmarks) must import the same copy. The sdist, the
wheels and the installs are built without build isolation, so that nothing is downloaded: the
test extra brings setuptools, build and twine. A release is the sdist, a platform wheel per
platform (with the C extension) and one pure-Python wheel (TRIO_WS_NO_EXTENSION=1) for the
platforms without one of their own (docs/topics/installing.rst).
"""

from __future__ import annotations

import email.parser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import h11
import pytest
import trio
import wsproto

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


BUILD = [sys.executable, "-m", "build", "--no-isolation"]
PIP_OFFLINE = [
    *[sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir"],
    *["--no-index", "--no-deps", "--no-build-isolation", "--ignore-installed"],
]


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack an sdist into ``into``: the directory that holds its pyproject.toml."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later; ours has no odd member
            tar.extraction_filter = tarfile.data_filter
        tar.extractall(into)
    (unpacked,) = (path for path in into.iterdir() if path.is_dir())
    return unpacked


@pytest.fixture(scope="module")
def sdist_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's sdist, as `python -m build` makes it: a .tar.gz."""
    out = tmp_path_factory.mktemp("sdist-archive")
    _run([*BUILD, "--sdist", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    (archive,) = out.glob("*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def sdist(sdist_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's sdist, unpacked: the directory that holds pyproject.toml."""
    return _unpack(sdist_archive, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def dist(sdist_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a release uploads, built from the sdist as pip builds it: the sdist, the platform
    wheel (with the C extension) and the pure-Python wheel (``TRIO_WS_NO_EXTENSION=1``)."""
    out = tmp_path_factory.mktemp("dist")
    shutil.copy2(sdist_archive, out)
    for variant, switch in [("platform", "0"), ("pure", "1")]:
        unpacked = _unpack(sdist_archive, tmp_path_factory.mktemp(variant))  # no build/ shared
        env = {**os.environ, "TRIO_WS_NO_EXTENSION": switch}
        _run([*BUILD, "--wheel", "--outdir", str(out), str(unpacked)], cwd=unpacked, env=env)
    return out


def _wheel(dist: Path, kind: str) -> Path:
    """The pure-Python wheel (``kind="pure"``) or this platform's (``kind="platform"``)."""
    (pure,) = dist.glob("*-py3-none-any.whl")
    if kind == "pure":
        return pure
    (platform,) = (wheel for wheel in dist.glob("*.whl") if wheel != pure)
    return platform


# Run by a fresh environment's Python: where trio_ws comes from, whether it masks in C, and a
# round trip of a 1 MiB message that the client masks and the server unmasks.
ROUND_TRIP = """
import json, trio, trio_ws, trio_ws.speedups, trio_ws.testing

async def main() -> None:
    payload = bytes(range(256)) * 4096
    async with trio_ws.testing.connection_pair() as (client, server):
        await client.send(payload)
        assert await server.recv() == payload
        await server.send("back")
        assert await client.recv() == "back"

trio.run(main)
print(json.dumps({"file": trio_ws.__file__, "version": trio_ws.__version__,
                  "active": trio_ws.speedups.ACTIVE, "reason": trio_ws.speedups.REASON}))
"""


def _install_and_round_trip(
    target: Path, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, object], str]:
    """Install ``target`` (a wheel or an sdist) alone into a fresh virtual environment, offline;
    run :data:`ROUND_TRIP` there. Its report, and pip's output."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    pip = _run([*PIP_OFFLINE, "--verbose", "--prefix", str(venv), str(target)], tmp_path, env)
    # The dependencies (trio, wsproto, h11 and theirs) come from this environment: a path entry
    # after the fresh site-packages, so that its trio_ws comes first.
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    homes = {str(Path(module.__file__ or "").parent.parent) for module in (trio, wsproto, h11)}
    (site / "_dependencies.pth").write_text("\n".join(sorted(homes)) + "\n")
    # -I: neither the working directory nor PYTHONPATH (.ci/run sets it to the checkout).
    output = _run([str(venv / "bin" / "python"), "-I", "-c", ROUND_TRIP], cwd=tmp_path)
    report: dict[str, object] = json.loads(output.splitlines()[-1])
    assert Path(str(report["file"])).is_relative_to(venv), f"imported {report['file']}"
    assert report["version"] == trio_ws.__version__
    return report, pip


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


# What the unpacked sdist's tests run: the protocol, the handshake, a connection, the masking
# with the extension built in place and the speedups flag; the examples and the docs build, which
# fail if a file they read is missing (about 10 s; the whole suite takes minutes).
SDIST_TESTS = [
    "tests/test_protocol.py",
    "tests/test_http.py",
    "tests/test_handshake.py",
    "tests/test_connection.py",
    "tests/test_masking.py",
    "tests/test_speedups.py",
    "tests/test_examples.py",
    "tests/test_docs.py",
]


@pytest.mark.slow
def test_sdists_tests_pass_from_the_unpacked_sdist(sdist: Path) -> None:
    """A meaningful part of the sdist's test suite passes in the unpacked sdist, offline, with
    its C extension built in place as .ci/run builds the checkout's, and nothing skipped."""
    _run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=sdist)
    env = {**os.environ, "PYTHONPATH": str(sdist)}  # child processes too import the sdist's copy
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    output = _run([*command, *SDIST_TESTS], cwd=sdist, env=env)
    assert " passed" in output and " skipped" not in output, output[-3000:]


@pytest.mark.slow
def test_a_release_is_an_sdist_a_platform_wheel_and_a_pure_python_wheel(dist: Path) -> None:
    """The platform wheel carries the compiled extension, the pure one none; neither carries C
    source. Their metadata has the one version (trio_ws/_version.py), the license and the
    Python versions."""
    assert sorted(path.name for path in dist.iterdir()) == sorted(
        [f"trio_ws-{trio_ws.__version__}.tar.gz", _wheel(dist, "pure").name,
         _wheel(dist, "platform").name]
    )  # fmt: skip
    tag = sys.implementation.cache_tag.replace("python-", "p")  # cpython-311 -> cp311
    assert _wheel(dist, "platform").name.startswith(f"trio_ws-{trio_ws.__version__}-{tag}-")
    for kind, compiled in [("platform", 1), ("pure", 0)]:
        with zipfile.ZipFile(_wheel(dist, kind)) as wheel:
            names = wheel.namelist()
            metadata = wheel.read(f"trio_ws-{trio_ws.__version__}.dist-info/METADATA")
        assert len([name for name in names if name.startswith("trio_ws/_speedups.")]) == (
            1 + compiled  # the .pyi, and the extension
        ), names
        assert not [name for name in names if name.endswith((".c", ".pyc"))]
        assert {"trio_ws/py.typed", "trio_ws/speedups.py"} <= set(names)
        fields = email.parser.BytesParser().parsebytes(metadata)
        assert fields["Version"] == trio_ws.__version__
        assert fields["License-Expression"] == "MIT"
        assert fields["License-File"] == "LICENSE"
        assert fields["Requires-Python"] == ">=3.11"


@pytest.mark.slow
def test_twine_accepts_the_release(dist: Path) -> None:
    """`twine check` passes on the sdist and both wheels: PyPI would render the README."""
    if importlib.util.find_spec("twine") is None:
        pytest.skip("needs twine (the test extra)")
    files = sorted(str(path) for path in dist.iterdir())
    output = _run([sys.executable, "-m", "twine", "check", "--strict", *files], cwd=dist)
    assert output.count("PASSED") == 3, output


@pytest.mark.slow
def test_pure_python_wheel_works_without_the_extension(dist: Path, tmp_path: Path) -> None:
    """The pure-Python wheel, installed alone: trio_ws.speedups says it masks in pure Python,
    and why, and a masked 1 MiB message goes through."""
    report, _ = _install_and_round_trip(_wheel(dist, "pure"), tmp_path)
    assert report["active"] is False
    assert "installed without its C extension" in str(report["reason"])


@pytest.mark.slow
def test_platform_wheel_masks_in_c(dist: Path, tmp_path: Path) -> None:
    """The platform wheel, installed alone: trio_ws.speedups says it masks in C."""
    report, _ = _install_and_round_trip(_wheel(dist, "platform"), tmp_path)
    assert report["active"] is True
    assert report["reason"] is None


@pytest.mark.slow
def test_sdist_installs_without_a_c_compiler(sdist_archive: Path, tmp_path: Path) -> None:
    """`pip install` of the sdist on a machine whose C compiler fails still succeeds, with a
    warning that says so; trio_ws then masks in pure Python."""
    env = {**os.environ, "CC": "/bin/false"}  # the compiler distutils runs
    env.pop("TRIO_WS_NO_EXTENSION", None)
    report, pip = _install_and_round_trip(sdist_archive, tmp_path, env)
    assert "the C extension trio_ws._speedups was not built" in pip
    assert report["active"] is False


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
