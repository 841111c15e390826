"""Figures for the report and the sensitivity study, made without pyplot: a :class:`matplotlib.figure.Figure`
draws and saves on its own, so the package never switches the user's backend (a notebook keeps its inline
figures) nor edits the global ``rcParams`` (its style applies only inside :func:`styled`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = ["STYLE", "styled", "new", "save"]

STYLE: dict[str, Any] = {"font.size": 9, "svg.fonttype": "none"}


@contextmanager
def styled() -> Iterator[None]:
    """The package's figure style, for the figures drawn and saved inside the block only."""
    import matplotlib

    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


def new(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots):
    """A figure and its axes (as ``plt.subplots`` returns them), not registered with pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save(fig, stem: Path, *, dpi: int = 120, bbox_inches: str | None = None) -> list[str]:
    """Write ``stem``.png and ``stem``.svg, each atomically (a temporary file, then a rename).

    Returns
    -------
    list of str
        The two paths.
    """
    out = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        with styled(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches=bbox_inches)
        out.append(str(path))
    return out
