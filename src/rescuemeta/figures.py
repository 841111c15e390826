"""Figures for the report and the sensitivity study, made without pyplot: a :class:`matplotlib.figure.Figure`
draws and saves on its own, so the package never switches the user's backend (a notebook keeps its inline
figures) nor edits the global ``rcParams`` (its style applies only inside :func:`styled`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = ["STYLE", "FORMATS", "FIGURE_FORMATS", "styled", "formats", "new", "save", "names", "draw", "memo", "cached",
           "background"]

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
    temporary file, then a rename). Inside :func:`background` a forked child draws ``fig`` later, as it is when the
    child is forked: the caller must not change ``fig`` after saving it.

    Returns
    -------
    list of str
        The paths written, PNG first.
    """
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in FORMATS.get()]
    renderer = BACKGROUND.get()
    if renderer is not None:
        renderer.submit(fig, paths, dpi, bbox_inches)
    else:
        _write(fig, paths, dpi, bbox_inches)
    return [str(p) for p in paths]


def _write(fig, paths: list[Path], dpi: int, bbox_inches: str | None) -> None:
    for path in paths:
        with styled(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi, bbox_inches=bbox_inches)


# Rendering in the background (issue 19). Drawing and encoding a report figure (~0.1-0.4 s, most of it
# matplotlib's Python-level artist traversal and text layout) holds the GIL, so threads do not help; inside
# :func:`background` figures are drawn by forked child processes instead, up to ``workers`` at a time, each child
# a batch of figures (:class:`_Renderer`), while the analysis goes on. A child draws each figure as it was when
# it was forked (fork copies the process), writes each file atomically and reports success or a traceback per
# figure through a pipe; the block's exit waits for every child and raises if one failed.
# Children die with their parent (Linux: PR_SET_PDEATHSIG, with SIGTERM, which the CLI turns into SystemExit, so
# they delete their temporary files). Where fork is not available (Windows), figures are drawn in the calling
# process as before.
BACKGROUND: ContextVar[_Renderer | None] = ContextVar("figure_background", default=None)


class FigureRenderError(RuntimeError):
    """A figure could not be rendered in the background (the child's traceback in the message)."""


def _die_with_parent(parent: int) -> None:
    import signal

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the child finishes its figure and exits
        pass
    if os.getppid() != parent:  # the parent died before the line above
        raise SystemExit(1)


def _write_work(fig, paths: list[Path], dpi: int, bbox_inches: str | None) -> Callable[[], None]:
    return lambda: _write(fig, paths, dpi, bbox_inches)


def _draw_work(render: Callable[[], list[str]], expect: list[str], formats: tuple[str, ...]) -> Callable[[], None]:
    def run() -> None:
        token = FORMATS.set(formats)  # those in force when the figure was submitted
        try:
            got = list(render())
        finally:
            FORMATS.reset(token)
        if got != list(expect):
            raise RuntimeError(f"the figure wrote {got}, where its caller expected {list(expect)}")

    return run


def _batch_child(conn, parent: int, works: list[Callable[[], None]]) -> None:
    """Draw a batch of figures one after the other; report one message per figure (None, or its traceback)."""
    import traceback

    messages: list[str | None] = [None] * len(works)
    try:
        _die_with_parent(parent)
        BACKGROUND.set(None)  # this child writes its own files
        for i, work in enumerate(works):
            try:
                work()
            except Exception:
                messages[i] = traceback.format_exc()
    finally:
        try:
            conn.send(messages)
            conn.close()
        except Exception:
            pass


class _Renderer:
    """The children of one :func:`background` block: at most ``workers`` alive, each drawing a batch of the figures
    waiting when it was forked (a snapshot of the process as it was then), one after the other.

    Why batches: every fork makes this process's memory copy-on-write again, so each page it writes afterwards is
    copied once (a page fault); forking one child per figure while the analysis goes on cost the parent 1-1.5 s in
    a changed-prior run (issue 19; measured: 16 children at once against 2). A free worker takes its share of what
    waits (``ceil(waiting / workers)``, in submission order), so both workers get figures and fewer children are
    forked while the analysis runs; while draining, what waits is split among the workers as they free (one last
    batch each). Children are forked at submits and while draining."""

    def __init__(self, workers: int):
        import multiprocessing

        self.ctx = multiprocessing.get_context("fork")
        self.workers = max(1, workers)
        self.jobs: list = []  # (process, connection, names of its figures)
        self.pending: list = []  # figures not yet forked: (name, work in a child, in-process fallback)
        self.errors: list[str] = []
        self.after: list[Callable[[], None]] = []  # run once every figure is on disk
        self.takers = 0  # while draining: the workers that have not taken their last batch yet

    def submit(self, fig, paths: list[Path], dpi: int, bbox_inches: str | None) -> None:
        work = _write_work(fig, paths, dpi, bbox_inches)
        self._queue(paths[0].name, work, work)

    def submit_draw(self, render: Callable[[], list[str]], expect: list[str]) -> None:
        self._queue(Path(expect[0]).name, _draw_work(render, expect, FORMATS.get()), render)

    def _queue(self, name: str, work: Callable[[], None], in_process: Callable) -> None:
        # not waited for: drawn by a child forked now (a worker is free) or at a later submit or while draining
        self.pending.append((name, work, in_process))
        self._reap(block=False)
        self._launch()

    def _launch(self) -> None:
        while self.pending and len(self.jobs) < self.workers:
            takers = self.takers or self.workers
            share = -(-len(self.pending) // takers)  # ceil: the other workers' shares stay here
            batch, self.pending = self.pending[:share], self.pending[share:]
            if self.takers:  # draining: each worker takes one last batch
                self.takers = max(1, self.takers - 1)
            self._fork(batch)

    def _fork(self, batch: list) -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):  # a child must not flush a copy of the parent's buffered output
            try:
                stream.flush()
            except Exception:
                pass
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_batch_child, args=(send, os.getpid(), [w for _, w, _ in batch]), daemon=True)
        try:
            proc.start()
        except (AssertionError, OSError):  # e.g. inside a daemonic process, which may not have children
            recv.close()
            send.close()
            for _, _, in_process in batch:
                in_process()
            return
        send.close()
        self.jobs.append((proc, recv, [name for name, _, _ in batch]))

    def _reap(self, block: bool) -> None:
        from multiprocessing.connection import wait

        if not self.jobs:
            return
        if block:
            wait([p.sentinel for p, _, _ in self.jobs])
        still = []
        for proc, conn, names in self.jobs:
            if proc.is_alive():
                still.append((proc, conn, names))
                continue
            proc.join()
            messages = None
            try:
                messages = conn.recv() if conn.poll() else None
            except EOFError:
                pass
            conn.close()
            if messages is None:  # the child died without a report (killed, crashed)
                self.errors += [f"{n}: exit code {proc.exitcode}, no report" for n in names]
                continue
            self.errors += [f"{n}: {m}" for n, m in zip(names, messages) if m is not None]
        self.jobs = still

    def drain(self) -> None:
        self.takers = self.workers  # nothing more will come: what waits is split among the workers as they free
        self._launch()
        while self.jobs:
            self._reap(block=True)
            self._launch()
        if self.errors:
            raise FigureRenderError("figure(s) could not be rendered:\n" + "\n".join(self.errors))
        for callback in self.after:
            callback()

    def terminate(self) -> None:
        self.pending = []
        for proc, _, _ in self.jobs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the child's atomic writer deletes its temporary file
        for proc, conn, _ in self.jobs:
            proc.join(timeout=30)
            conn.close()
        self.jobs = []


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods() and os.environ.get(
        "RESCUEMETA_FIGURE_WORKERS", "") != "0"


@contextmanager
def background(workers: int | None = None) -> Iterator[None]:
    """Within the block, :func:`save` and :func:`draw` hand each figure to forked child processes (at most
    ``workers`` at once, each drawing a batch of the figures waiting when it was forked: :class:`_Renderer`;
    default: the number of CPUs, at most 2; ``RESCUEMETA_FIGURE_WORKERS`` overrides, 0 renders in this process) and
    return the paths at once; leaving the block waits for every figure.

    Raises
    ------
    FigureRenderError
        On leaving the block, if a figure failed (each failure's traceback in the message). Records of
        :func:`cached` figures are written only once every figure is on disk.
    """
    if not _can_fork() or BACKGROUND.get() is not None:
        yield
        return
    env = os.environ.get("RESCUEMETA_FIGURE_WORKERS", "")
    n = int(env) if env.strip().isdigit() else (workers or min(2, os.cpu_count() or 1))
    renderer = _Renderer(n)
    token = BACKGROUND.set(renderer)
    try:
        yield
        renderer.drain()
    except BaseException:
        renderer.terminate()
        raise
    finally:
        BACKGROUND.reset(token)


def names(stem: str | Path) -> list[str]:
    """The files :func:`save` writes for ``stem`` with the current formats (PNG first), as it returns them."""
    stem = Path(stem)
    return [str(stem.with_name(f"{stem.name}.{ext}")) for ext in FORMATS.get()]


def draw(render: Callable[[], list[str]], expect: list[str] | None = None) -> list[str]:
    """``render()`` (which draws a figure and saves it, returning what :func:`save` returned), or, inside
    :func:`background` and given the list it will return (``expect``, e.g. from :func:`names`), the whole of it
    (drawing included: matplotlib's artists, ~0.2-0.4 s a figure, hold the GIL) in a forked child while the analysis
    goes on; then ``expect`` is returned at once, and the child fails (raising on leaving the block) if the render
    returned anything else."""
    renderer = BACKGROUND.get()
    if renderer is None or not expect:
        return render()
    renderer.submit_draw(render, list(expect))
    return list(expect)


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


def cached(stem: str, key: dict, render: Callable[[], list[str]], expect: list[str] | None = None) -> list[str]:
    """``render()`` (which writes figure files and returns their names or paths), unless :func:`memo` is active
    and the files of ``stem`` recorded under the same ``key`` all still exist: then their names as recorded.
    ``render`` runs through :func:`draw` (with ``expect``: in a forked child inside :func:`background`).

    The record (``.figure_keys.json`` beside the figures) drops ``stem`` before rendering and gains it after, each
    written atomically, so a run killed mid-way never leaves a key beside a figure drawn from other inputs."""
    import json

    from .atomic import cache_key, write_text

    out = MEMO.get()
    if out is None:
        return draw(render, expect)
    path = out / _MEMO_FILE
    k = cache_key({"figure": stem, "key": key, "formats": list(FORMATS.get()), "style": STYLE})
    keys = _read_keys(path)
    hit = keys.get(stem)
    if hit is not None and hit["key"] == k and all((out / Path(f).name).exists() for f in hit["files"]):
        return list(hit["files"])
    if stem in keys:
        del keys[stem]
        write_text(path, json.dumps(keys))
    files = draw(render, expect)
    recorded = list(files)  # a copy: callers extend the list they get back

    def record() -> None:
        keys = _read_keys(path)
        keys[stem] = {"key": k, "files": recorded}
        write_text(path, json.dumps(keys))

    renderer = BACKGROUND.get()
    if renderer is not None:  # recorded once the background renders are all on disk
        renderer.after.append(record)
    else:
        record()
    return files
