"""The installed version of trio_ws."""

__version__ = "0.1.0"
