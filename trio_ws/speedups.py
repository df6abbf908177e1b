"""Whether trio_ws masks frames in C: its optional extension, ``trio_ws._speedups``.

Every frame a client sends is masked (RFC 6455 §5.3), and every frame a server receives is
unmasked. trio_ws does it in C when its extension was built, about 20 times faster than
wsproto's pure-Python masker (which it uses otherwise). Nothing else changes: the same API,
the same bytes on the wire.

The extension is missing when trio_ws was installed from the pure-Python wheel, built from the
sdist without a C compiler (the build then succeeds anyway) or with ``TRIO_WS_NO_EXTENSION=1``,
or when Python imports trio_ws from a source checkout in which it was not built in place::

    import trio_ws.speedups

    if not trio_ws.speedups.ACTIVE:
        print("trio_ws masks in pure Python:", trio_ws.speedups.REASON)

Both values are fixed when trio_ws is first imported.
"""

from __future__ import annotations

from pathlib import Path

from . import _masking

__all__ = ["ACTIVE", "REASON"]


def _reason(error: ImportError | None) -> str | None:
    if error is None:
        return None
    package = Path(__file__).resolve().parent
    if not isinstance(error, ModuleNotFoundError) or error.name != "trio_ws._speedups":
        # Built, but it does not load: another Python's build, a missing symbol...
        return f"trio_ws._speedups ({package}) failed to import: {error}"
    if (package / "_speedups.c").is_file():  # wheels carry no C source; checkouts and sdists do
        return (
            f"trio_ws is imported from a source tree ({package}) where the C extension is not"
            f" built: run `python setup.py build_ext --inplace` in {package.parent}, or install"
            " trio_ws and run Python outside the source tree"
        )
    return (
        f"trio_ws ({package}) was installed without its C extension: from the pure-Python"
        " wheel, or built without a C compiler or with TRIO_WS_NO_EXTENSION=1"
    )


#: True when trio_ws masks and unmasks frames with its C extension, False when it uses
#: wsproto's pure-Python masker.
ACTIVE: bool = _masking.mask is not None

#: Why :data:`ACTIVE` is False, in a sentence that says what to do about it; None when it is
#: True.
REASON: str | None = _reason(_masking.import_error)
