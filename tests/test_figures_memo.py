"""figures.cached (issue 19): inside figures.memo a figure drawn from the same inputs is not drawn again; a changed
key, format or a missing file draws it again; outside a memo every call draws."""

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
