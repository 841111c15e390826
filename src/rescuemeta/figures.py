"""Figures for the report and the sensitivity study, made without pyplot: a :class:`matplotlib.figure.Figure`
draws and saves on its own, so the package never switches the user's backend (a notebook keeps its inline
figures) nor edits the global ``rcParams`` (its style applies only inside :func:`styled`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = ["STYLE", "FORMATS", "FIGURE_FORMATS", "styled", "formats", "new", "save"]

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
