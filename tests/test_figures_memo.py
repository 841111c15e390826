"""figures.cached (issue 19): inside figures.memo a figure drawn from the same inputs is not drawn again; a changed
key, format or a missing file draws it again; outside a memo every call draws."""

import json
from pathlib import Path

from rescuemeta import figures


def _render(out, calls, name="f"):
    def render():
        calls.append(name)
        (out / f"{name}.png").write_text("png")
        return [f"{name}.png"]
    return render


def test_same_key_is_reused_and_anything_else_redraws(tmp_path):
    calls: list[str] = []
    with figures.memo(tmp_path):
        assert figures.cached("f", {"fit": "a"}, _render(tmp_path, calls)) == ["f.png"]
        assert figures.cached("f", {"fit": "a"}, _render(tmp_path, calls)) == ["f.png"]
        assert calls == ["f"]  # drawn once
        figures.cached("f", {"fit": "b"}, _render(tmp_path, calls))  # other inputs
        assert calls == ["f", "f"]
        (tmp_path / "f.png").unlink()  # a missing file
        figures.cached("f", {"fit": "b"}, _render(tmp_path, calls))
        assert calls == ["f", "f", "f"]
        with figures.formats(["svg"]):  # other formats: another key
            figures.cached("f", {"fit": "b"}, _render(tmp_path, calls))
        assert len(calls) == 4
    figures.cached("f", {"fit": "b"}, _render(tmp_path, calls))  # no memo: always drawn
    assert len(calls) == 5


def test_a_failed_render_leaves_no_key(tmp_path):
    calls: list[str] = []
    with figures.memo(tmp_path):
        figures.cached("f", {"fit": "a"}, _render(tmp_path, calls))

        def boom():
            raise RuntimeError("killed mid-way")
        try:
            figures.cached("f", {"fit": "b"}, boom)
        except RuntimeError:
            pass
        # the old key was dropped before drawing: neither key may claim the file now
        figures.cached("f", {"fit": "a"}, _render(tmp_path, calls))
        assert calls == ["f", "f"]


def _figure(label="a", broken=False):
    fig, ax = figures.new((3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    ax.set_title(label)
    if broken:  # an artist that fails when drawn: the error happens in the child that renders it
        from matplotlib.artist import Artist

        class Broken(Artist):
            def draw(self, renderer):
                raise ValueError("cannot draw this")

        ax.add_artist(Broken())
    return fig


def test_background_rendering_writes_the_same_files(tmp_path):
    """figures.background: each save is rendered by a forked child; the files equal those rendered in this process
    byte for byte (PNG; an SVG beside each), the paths are returned at once, and all are on disk when the block ends."""
    import os

    (tmp_path / "here").mkdir()
    with figures.formats(["svg"]):
        for i in range(3):
            figures.save(_figure(str(i)), tmp_path / "here" / f"f{i}")
        with figures.background(workers=2):
            paths = [figures.save(_figure(str(i)), tmp_path / "bg" / f"f{i}") for i in range(3)]
            renderer = figures.BACKGROUND.get()
            assert renderer is not None and renderer.jobs  # rendering in children, not here
        assert figures.BACKGROUND.get() is None
    for i, pair in enumerate(paths):
        assert [os.path.basename(p) for p in pair] == [f"f{i}.png", f"f{i}.svg"]
        assert (tmp_path / "bg" / f"f{i}.png").read_bytes() == (tmp_path / "here" / f"f{i}.png").read_bytes()
        # SVG ids carry a random salt in every process (matplotlib's svg.hashsalt): the same drawing, not bytes
        svg = (tmp_path / "bg" / f"f{i}.svg").read_text()
        assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert not list(tmp_path.rglob("*.part"))


def test_background_failure_is_raised_and_leaves_no_record(tmp_path):
    """A figure that fails in its child: leaving the block raises FigureRenderError with the child's traceback,
    the other figures are written, no temporary file is left, and no memo record is written (the next run
    draws them again)."""
    import time

    import pytest

    with figures.memo(tmp_path), pytest.raises(figures.FigureRenderError, match="cannot draw this"):
        with figures.background(workers=2):
            figures.cached("good", {"k": 1}, lambda: figures.save(_figure(), tmp_path / "good"))
            figures.cached("bad", {"k": 1}, lambda: figures.save(_figure(broken=True), tmp_path / "bad"))
    assert (tmp_path / "good.png").exists() and not (tmp_path / "bad.png").exists()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))
    assert not (tmp_path / figures._MEMO_FILE).exists() or "good" not in (tmp_path / figures._MEMO_FILE).read_text()
    # in one batch (one worker: the second and third figures wait, then go to one child): the figure after the
    # failing one is still drawn, and the error names the failing one only
    with pytest.raises(figures.FigureRenderError) as info:
        with figures.background(workers=1):
            def slow_first():
                time.sleep(1.0)  # the worker stays busy while the next two are submitted
                return figures.save(_figure(), tmp_path / "first")
            figures.draw(slow_first, figures.names(tmp_path / "first"))
            figures.save(_figure(broken=True), tmp_path / "broken")
            figures.save(_figure(), tmp_path / "after")
            assert len(figures.BACKGROUND.get().pending) == 2
    assert (tmp_path / "first.png").exists() and (tmp_path / "after.png").exists()
    assert "broken.png: Traceback" in str(info.value) and "after.png" not in str(info.value)
    with figures.memo(tmp_path), figures.background(workers=2):  # a good run records its figures once all are done
        names = figures.cached("good", {"k": 1}, lambda: figures.save(_figure(), tmp_path / "good"))
        names += figures.cached("other", {"k": 1}, lambda: figures.save(_figure(), tmp_path / "other"))
    keys = json.loads((tmp_path / figures._MEMO_FILE).read_text())
    # each record holds its own figure only (the list the caller extended is not the one recorded)
    assert [Path(f).name for f in keys["good"]["files"]] == ["good.png"]
    assert [Path(f).name for f in keys["other"]["files"]] == ["other.png"]


def test_background_off_renders_here(tmp_path, monkeypatch):
    monkeypatch.setenv("RESCUEMETA_FIGURE_WORKERS", "0")
    with figures.background():
        figures.save(_figure(), tmp_path / "f")
        assert figures.BACKGROUND.get() is None and (tmp_path / "f.png").exists()


def test_whole_figures_drawn_in_the_background(tmp_path):
    """figures.draw with the names it will return: inside figures.background the whole render (drawing included)
    runs in a forked child and the names are returned at once; the files equal those drawn here; figures submitted
    while the workers are busy are drawn in batches, one child each; a render that writes other files than its
    caller expected fails the block; outside the block it draws here."""
    import os
    import time

    import pytest

    def render(where, label, pid_file, pause=0.0):
        def go():
            time.sleep(pause)  # a slow figure: the workers stay busy while the others are submitted
            pid_file.write_text(str(os.getpid()))
            return figures.save(_figure(label), where)
        return go

    here = figures.draw(render(tmp_path / "here", "a", tmp_path / "pid_here"), figures.names(tmp_path / "here"))
    assert (tmp_path / "pid_here").read_text() == str(os.getpid()) and here == [str(tmp_path / "here.png")]
    with figures.background(workers=2):
        got = figures.draw(render(tmp_path / "bg", "a", tmp_path / "pid_bg"), figures.names(tmp_path / "bg"))
        assert got == [str(tmp_path / "bg.png")]
        assert figures.BACKGROUND.get().jobs  # drawing in a child
    assert int((tmp_path / "pid_bg").read_text()) != os.getpid()
    assert (tmp_path / "bg.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    # not waited for: the caller goes on while the workers draw; figures submitted while both are busy wait here
    # and are drawn in batches, a free worker taking its share (ceil(waiting / workers)) in one child
    with figures.background(workers=2):
        for i in range(6):
            figures.draw(render(tmp_path / f"q{i}", "a", tmp_path / f"pid_q{i}", pause=0.5),
                         figures.names(tmp_path / f"q{i}"))
        renderer = figures.BACKGROUND.get()
        assert len(renderer.jobs) == 2 and len(renderer.pending) == 4
    assert all((tmp_path / f"q{i}.png").read_bytes() == (tmp_path / "here.png").read_bytes() for i in range(6))
    pids = [(tmp_path / f"pid_q{i}").read_text() for i in range(6)]
    assert len(set(pids)) == 4 and pids[2] == pids[3] and pids[4] == pids[5] and os.getpid() not in map(int, pids)
    with pytest.raises(figures.FigureRenderError, match="expected"):
        with figures.background(workers=2):
            figures.draw(render(tmp_path / "other", "a", tmp_path / "pid_x"), figures.names(tmp_path / "elsewhere"))
