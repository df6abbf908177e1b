"""The one thing pyproject.toml cannot say: the optional C extension (trio_ws/_speedups.c).

It is optional: without a C compiler (or Python's headers) the build still succeeds, with a
warning, and trio_ws masks frames with wsproto's pure-Python code (trio_ws/_masking.py);
``trio_ws.speedups.ACTIVE`` tells which. ``TRIO_WS_NO_EXTENSION=1`` in the environment leaves
the extension out altogether: the wheel is then a pure-Python one (py3-none-any), the one a
release publishes for platforms that have no wheel of their own (docs/topics/installing.rst).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError, CompileError

SWITCH = "TRIO_WS_NO_EXTENSION"


class build_ext_optional(build_ext):  # lower case, as setuptools names its commands
    """build_ext that says loudly what a failed optional build means, then lets it pass."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, BaseError) as exc:
            # Extension(optional=True): setuptools then goes on without it. self.warn, not
            # warnings.warn: pip shows a build's log (with -v) but not always its warnings.
            self.warn(
                f"trio_ws: the C extension {ext.name} was not built ({exc}).\n"
                "trio_ws will mask frames in pure Python: slower, the same behaviour. A C "
                f"compiler and Python's headers build it; {SWITCH}=1 leaves it out without "
                "trying. trio_ws.speedups.ACTIVE says whether an installed trio_ws has it."
            )
            raise


switch = os.environ.get(SWITCH, "")
if switch not in ("", "0", "1"):
    raise SystemExit(f"{SWITCH}={switch!r}: set it to 1 (leave the C extension out) or 0")
extensions = (
    []
    if switch == "1"
    else [Extension("trio_ws._speedups", ["trio_ws/_speedups.c"], optional=True)]
)
setup(ext_modules=extensions, cmdclass={"build_ext": build_ext_optional})
