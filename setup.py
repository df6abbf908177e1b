"""The one thing pyproject.toml cannot say: the optional C extension (trio_ws/_speedups.c).

``optional=True``: without a C compiler the install still succeeds, and trio_ws masks frames
with wsproto's pure-Python code (trio_ws/_masking.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trio_ws._speedups", ["trio_ws/_speedups.c"], optional=True)])
