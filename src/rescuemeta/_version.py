"""The installed package's version (from its metadata), importable by any module without importing the package's
``__init__`` first."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rescuemeta")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
