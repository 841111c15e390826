"""Property-based: generated valid tables load unchanged; a single corrupted cell is rejected with an
InputError that names the file, the data row and the column.

Tables are drawn from seeded numpy generators (60 per property, each seed a test id, so a failure names the
table that broke it) rather than with hypothesis: pandera imports hypothesis whenever it is installed, which
added 0.2 s to every `rescuemeta freq`/`check` in the project's environment (measured in BENCHMARKS.md)."""

import csv
import io

import numpy as np
import pytest

from rescuemeta.data import load_studies
from rescuemeta.errors import InputError

HEADER = ["study_id", "outcome", "events_treat", "total_treat", "events_control", "total_control", "count_basis"]


def _int(rng, lo, hi):
    """An integer in [lo, hi], the ends drawn as often as any inner value times four (edge cases)."""
    pick = rng.integers(0, 10)
    return lo if pick == 0 else hi if pick == 1 else int(rng.integers(lo, hi + 1))


def tables(rng):
    n = int(rng.integers(1, 9))
    rows = []
    for i in range(n):
        nt = _int(rng, 1, 10_000)
        two = bool(rng.integers(0, 2))
        nc = _int(rng, 1, 10_000) if two else None
        rows.append({"study_id": f"S{i}", "outcome": str(rng.choice(["mortality", "sich"])),
                     "events_treat": _int(rng, 0, nt), "total_treat": nt,
                     "events_control": _int(rng, 0, nc) if two else "", "total_control": nc if two else "",
                     "count_basis": str(rng.choice(["reported", "from_percent", "denominator_fitted",
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


SEEDS = range(60)


@pytest.mark.parametrize("seed", SEEDS)
def test_valid_tables_load(tmp_path_factory, seed):
    rows = tables(np.random.default_rng(seed))
    t = load_studies(_write(tmp_path_factory, rows))
    f = t.frame
    assert len(f) == len(rows)
    assert [int(x) for x in f["events_treat"]] == [r["events_treat"] for r in rows]


CORRUPTIONS = {
    "events_treat": ["-1", "2.5", "nan", "inf", "x", ""],
    "total_treat": ["0", "-3", "1e99", "abc"],
    "count_basis": ["guessed", "REPORTED?"],
}


@pytest.mark.parametrize("seed", SEEDS)
def test_one_bad_cell_is_located(tmp_path_factory, seed):
    rng = np.random.default_rng(10_000 + seed)
    rows = tables(rng)
    i = int(rng.integers(0, len(rows)))
    col = str(rng.choice(sorted(CORRUPTIONS)))
    rows[i] = {**rows[i], col: str(rng.choice(CORRUPTIONS[col]))}
    p = _write(tmp_path_factory, rows)
    try:
        load_studies(p)
    except InputError as e:
        msg = str(e)
        assert str(p) in msg and f"row {i + 1} (line {i + 2})" in msg, msg
        assert "column '" in msg and "\n" not in msg
    else:
        raise AssertionError(f"corrupted {col}={rows[i][col]!r} in row {i + 1} was accepted")
