"""The package's version, importable by any module without importing the package's ``__init__`` first.

A literal, read by hatchling for the package metadata (``[tool.hatch.version]`` in pyproject.toml): looking it up
with ``importlib.metadata`` cost every command 0.1-0.15 s of start-up (scanning the installed distributions)."""

__version__ = "0.1.0"
