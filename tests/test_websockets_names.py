"""docs/websockets.rst maps every public name of websockets to trio_ws: check it against both
packages, so that the table cannot drift from either."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

pytest.importorskip("websockets.asyncio.client", reason="needs websockets (the test extra)")

PAGE = Path(__file__).resolve().parent.parent / "docs" / "websockets.rst"

#: The modules of websockets' public API that the page maps, every name of their __all__.
MAPPED_MODULES = [
    "websockets.asyncio.client",
    "websockets.asyncio.server",
    "websockets.asyncio.router",
    "websockets.asyncio.connection",
    "websockets.exceptions",
    "websockets.datastructures",
    "websockets.http11",
    "websockets.frames",
    "websockets.protocol",
    "websockets.typing",
]

_ROW = re.compile(
    r"^   \* - ``(?P<theirs>websockets\.[\w.]+)``\n     - (?P<ours>.*)\n     -(?P<note>.*)$",
    re.MULTILINE,
)
_OURS = re.compile(r":py:obj:`~(?P<name>trio_ws[\w.]+)`")


def rows() -> list[tuple[str, str | None, str]]:
    """(websockets name, trio_ws name or None, note) for each row of the table."""
    found = []
    for match in _ROW.finditer(PAGE.read_text()):
        ours = _OURS.fullmatch(match["ours"])
        assert ours is not None or match["ours"] == "—", match["ours"]
        found.append((match["theirs"], ours["name"] if ours else None, match["note"].strip()))
    return found


def resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(dotted)


def test_the_table_lists_every_public_name_of_the_mapped_modules_once() -> None:
    """Each name in the __all__ of each mapped websockets module has exactly one row, and no
    row names anything else."""
    listed = [theirs for theirs, _, _ in rows()]
    expected = [
        f"{module}.{name}"
        for module in MAPPED_MODULES
        for name in importlib.import_module(module).__all__
    ]
    assert sorted(listed) == sorted(expected)


@pytest.mark.parametrize(("theirs", "ours", "note"), rows(), ids=lambda value: str(value))
def test_each_row_names_what_exists_on_both_sides(
    theirs: str, ours: str | None, note: str
) -> None:
    """The websockets name exists in websockets; the trio_ws name exists in trio_ws, and a
    name trio_ws lacks says, in its note, what stands in for it."""
    resolve(theirs)
    if ours is None:
        assert note, f"{theirs}: no trio_ws name and no note saying why"
    else:
        resolve(ours)


def test_exceptions_keep_websockets_hierarchy_where_both_have_them() -> None:
    """For every exception both packages have, trio_ws's derives from the trio_ws names of the
    websockets classes its websockets twin derives from."""
    mapping = {theirs: ours for theirs, ours, _ in rows() if ours is not None}
    for theirs, ours in mapping.items():
        their_class = resolve(theirs)
        if not (isinstance(their_class, type) and issubclass(their_class, Exception)):
            continue
        our_class = resolve(ours)
        assert isinstance(our_class, type)
        for base in their_class.__mro__[1:]:
            base_name = f"{base.__module__}.{base.__qualname__}"
            if base_name in mapping:
                assert issubclass(our_class, resolve(mapping[base_name])), (theirs, base_name)  # type: ignore[arg-type]
