"""Atomic output: every file is written to a temporary name in its target directory and renamed into
place only when complete, so an interrupted run never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["ensure_dir", "atomic_path", "to_jsonable", "write_text", "clean_stale_parts", "cache_key", "file_digest",
           "code_fingerprint"]


def ensure_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if needed; an :class:`InputError` if it cannot be a writable directory."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError("output path exists and is not a directory", file=p) from None
    except PermissionError:
        raise InputError("output directory cannot be created (permission denied)", file=p) from None
    except OSError as e:
        raise InputError(f"output directory cannot be created ({e.strerror})", file=p) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError("output directory is not writable", file=p)
    return p


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path next to ``target``; on success rename it onto ``target``, on any error delete it.

    The rename is atomic on POSIX file systems: readers see the old file or the complete new one.
    """
    target = Path(target)
    ensure_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions of a normal write
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(o):
    """Plain JSON types for numpy scalars and containers; non-finite floats become None (JSON null)."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: to_jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [to_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def clean_stale_parts(directory: str | Path) -> int:
    """Delete ``.*.part`` files that a killed writer (SIGKILL) left in ``directory``; returns how many."""
    d = Path(directory)
    n = 0
    if d.is_dir():
        for p in d.glob(".*.part"):
            p.unlink(missing_ok=True)
            n += 1
    return n


_CODE_HASH: str | None = None


def cache_key(payload: dict, length: int = 24) -> str:
    """The key of a cached result: sha256 of ``payload`` (JSON, keys sorted) with the package version and the
    source fingerprint (:func:`code_fingerprint`), so that nothing computed by other code is re-used. Every cache
    (fits, sensitivity rows, the report's inputs stamp) keys its entries with it."""
    import hashlib
    import json

    from ._version import __version__

    blob = json.dumps({**payload, "version": __version__, "code": code_fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_digest(path) -> str | None:
    """sha256 of a file's bytes, or None when there is no such file (for :func:`cache_key` payloads)."""
    import hashlib

    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def code_fingerprint() -> str:
    """sha256 (16 hex digits) of the package's source files: part of every cache key, so that results computed
    by other code (a different version or an edited checkout) are never re-used."""
    global _CODE_HASH
    if _CODE_HASH is None:
        import hashlib

        h = hashlib.sha256()
        for f in sorted(Path(__file__).parent.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _CODE_HASH = h.hexdigest()[:16]
    return _CODE_HASH
