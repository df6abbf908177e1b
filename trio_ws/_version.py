"""The version of trio_ws: written here only; pyproject.toml and the docs read it from here."""

__version__ = "0.1.0"
