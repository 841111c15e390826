"""Reading the TOML files users edit (analysis specs, dataset descriptions): one reader and one key checker, so
that every file's errors name the file and the key the same way."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import InputError

__all__ = ["read_toml", "check_keys"]


def read_toml(path: str | Path, what: str = "spec file") -> dict:
    """Parse a TOML file (a UTF-8 byte-order mark is allowed); errors name the file, and the line tomllib
    reports."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"is a directory, not a TOML {what}", file=p)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=p) from None
    except PermissionError:
        raise InputError(f"{what} is not readable (permission denied)", file=p) from None
    except OSError as e:
        raise InputError(f"{what} cannot be read ({e.strerror})", file=p) from None
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", file=p) from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{what} is not valid TOML: {e}", file=p) from None


def check_keys(doc, allowed: dict, path, prefix: str = "", *, nonempty_strings: bool = False) -> None:
    """Unknown keys and wrong types are errors naming the file and the key (``prefix`` + key, e.g.
    ``simulation.k``). ``allowed`` maps each key to int, float, str, bool, list or dict, or a tuple of them; with
    ``nonempty_strings`` a str value must not be blank."""
    if not isinstance(doc, dict):
        raise InputError(f"[{prefix.rstrip('.') or 'top level'}] must be a table", file=path)
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if key not in allowed:
            raise InputError(f"unknown key {name!r}; allowed: {', '.join(sorted(allowed))}", file=path)
        want = allowed[key]
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"key {name!r} must be an integer, got {value!r}", file=path)
        if want is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"key {name!r} must be a number, got {value!r}", file=path)
        if want in (str, bool, list, dict) and not isinstance(value, want):
            raise InputError(f"key {name!r} must be a {want.__name__}, got {value!r}", file=path)
        if isinstance(want, tuple) and not isinstance(value, want):
            kinds = " or ".join("table" if w is dict else w.__name__ for w in want)
            raise InputError(f"key {name!r} must be a {kinds}, got {value!r}", file=path)
        if want is str and nonempty_strings and not value.strip():
            raise InputError(f"key {name!r} must be a non-empty string, got {value!r}", file=path)
