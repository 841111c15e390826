"""Figures for the report and the sensitivity study, made without pyplot: a :class:`matplotlib.figure.Figure`
draws and saves on its own, so the package never switches the user's backend (a notebook keeps its inline
figures) nor edits the global ``rcParams`` (its style applies only inside :func:`styled`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = ["STYLE", "FORMATS", "FIGURE_FORMATS", "styled", "formats", "new", "save", "memo", "cached"]

FIGURE_FORMATS = ("png", "svg", "pdf")  # what a spec's figure_formats may list
# the formats :func:`save` writes: PNG unless a caller asks for more (each format is a full render: ~0.35 s for a
# report figure, so SVG for every figure of an analysis cost ~20 s; it is written only where asked)
FORMATS: ContextVar[tuple[str, ...]] = ContextVar("figure_formats", default=("png",))

STYLE: dict[str, Any] = {"font.size": 9, "svg.fonttype": "none"}


@contextmanager
def styled() -> Iterator[None]:
    """The package's figure style, for the figures drawn and saved inside the block only."""
    import matplotlib

    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


@contextmanager
def formats(names: Iterable[str]) -> Iterator[None]:
    """Within the block, :func:`save` writes these formats (e.g. ``("png", "svg")``); PNG always comes first, as
    the report embeds it."""
    names = tuple(dict.fromkeys(["png", *names]))
    bad = [n for n in names if n not in FIGURE_FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; choose from {', '.join(FIGURE_FORMATS)}")
    token = FORMATS.set(names)
    try:
        yield
    finally:
        FORMATS.reset(token)


def new(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots):
    """A figure and its axes (as ``plt.subplots`` returns them), not registered with pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save(fig, stem: Path, *, dpi: int = 120, bbox_inches: str | None = None) -> list[str]:
    """Write ``stem``.png (and the other formats of :data:`FORMATS`, see :func:`formats`), each atomically (a
    temporary file, then a rename).

    Returns
    -------
    list of str
        The paths written, PNG first.
    """
    out = []
    for ext in FORMATS.get():
        path = stem.with_name(f"{stem.name}.{ext}")
        with styled(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches=bbox_inches)
        out.append(str(path))
    return out


# Figures already on disk, drawn from the same inputs, are not drawn again (issue 19: a re-run with one prior
# changed redrew all 56 figures of the report, ~20 s). Only inside :func:`memo`; every caller states what its
# figure is drawn from (``key``), and the key also holds the formats, the style and the package's source
# fingerprint (:func:`rescuemeta.atomic.cache_key`).
MEMO: ContextVar[Path | None] = ContextVar("figure_memo", default=None)
_MEMO_FILE = ".figure_keys.json"


@contextmanager
def memo(out_dir: str | Path) -> Iterator[None]:
    """Within the block, :func:`cached` re-uses the figures in ``out_dir`` whose recorded key matches."""
    token = MEMO.set(Path(out_dir))
    try:
        yield
    finally:
        MEMO.reset(token)


def _read_keys(path: Path) -> dict:
    import json

    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def cached(stem: str, key: dict, render: Callable[[], list[str]]) -> list[str]:
    """``render()`` (which writes figure files and returns their names or paths), unless :func:`memo` is active
    and the files of ``stem`` recorded under the same ``key`` all still exist: then their names as recorded.

    The record (``.figure_keys.json`` beside the figures) drops ``stem`` before rendering and gains it after, each
    written atomically, so a run killed mid-way never leaves a key beside a figure drawn from other inputs."""
    import json

    from .atomic import cache_key, write_text

    out = MEMO.get()
    if out is None:
        return render()
    path = out / _MEMO_FILE
    k = cache_key({"figure": stem, "key": key, "formats": list(FORMATS.get()), "style": STYLE})
    keys = _read_keys(path)
    hit = keys.get(stem)
    if hit is not None and hit["key"] == k and all((out / Path(f).name).exists() for f in hit["files"]):
        return list(hit["files"])
    if stem in keys:
        del keys[stem]
        write_text(path, json.dumps(keys))
    files = render()
    keys = _read_keys(path)
    keys[stem] = {"key": k, "files": list(files)}
    write_text(path, json.dumps(keys))
    return files
