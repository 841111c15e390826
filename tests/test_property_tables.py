"""Property-based: generated valid tables load unchanged; a single corrupted cell is rejected with an
InputError that names the file, the data row and the column."""

import csv
import io

from hypothesis import HealthCheck, given, settings, strategies as st

from rescuemeta.data import load_studies
from rescuemeta.errors import InputError

HEADER = ["study_id", "outcome", "events_treat", "total_treat", "events_control", "total_control", "count_basis"]


@st.composite
def tables(draw):
    n = draw(st.integers(1, 8))
    rows = []
    for i in range(n):
        nt = draw(st.integers(1, 10_000))
        two = draw(st.booleans())
        nc = draw(st.integers(1, 10_000)) if two else None
        rows.append({"study_id": f"S{i}", "outcome": draw(st.sampled_from(["mortality", "sich"])),
                     "events_treat": draw(st.integers(0, nt)), "total_treat": nt,
                     "events_control": draw(st.integers(0, nc)) if two else "", "total_control": nc if two else "",
                     "count_basis": draw(st.sampled_from(["reported", "from_percent", "denominator_fitted",
                                                          "approximate"]))})
    return rows


def _write(tmp_path_factory, rows):
    p = tmp_path_factory.mktemp("prop") / "t.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HEADER, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    p.write_text(buf.getvalue(), encoding="utf-8")
    return p


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=tables())
def test_valid_tables_load(tmp_path_factory, rows):
    t = load_studies(_write(tmp_path_factory, rows))
    f = t.frame
    assert len(f) == len(rows)
    assert [int(x) for x in f["events_treat"]] == [r["events_treat"] for r in rows]


CORRUPTIONS = {
    "events_treat": ["-1", "2.5", "nan", "inf", "x", ""],
    "total_treat": ["0", "-3", "1e99", "abc"],
    "count_basis": ["guessed", "REPORTED?"],
}


@SETTINGS
@given(rows=tables(), data=st.data())
def test_one_bad_cell_is_located(tmp_path_factory, rows, data):
    i = data.draw(st.integers(0, len(rows) - 1))
    col = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    rows[i] = {**rows[i], col: data.draw(st.sampled_from(CORRUPTIONS[col]))}
    p = _write(tmp_path_factory, rows)
    try:
        load_studies(p)
    except InputError as e:
        msg = str(e)
        assert str(p) in msg and f"row {i + 1} (line {i + 2})" in msg, msg
        assert "column '" in msg and "\n" not in msg
    else:
        raise AssertionError(f"corrupted {col}={rows[i][col]!r} in row {i + 1} was accepted")
