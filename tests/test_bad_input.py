"""Bad input gets a clear one-line error naming file, row and column, exit code 2, no traceback.

Each file in tests/data/bad/ is one malformed input; the table below says what the message must name.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rescuemeta.cli import app

BAD = Path(__file__).parent / "data" / "bad"
GOOD = Path(__file__).resolve().parents[1] / "data" / "studies.csv"
runner = CliRunner()

# file -> fragments the message must contain (file name is always checked)
CASES = {
    "missing_column.csv": ["missing required column", "total_treat", "column 'total_treat'"],
    "non_integer_count.csv": ["row 2 (line 3)", "column 'events_treat'", "not a whole number", "2.5"],
    "negative_count.csv": ["row 2 (line 3)", "column 'events_treat'", ">= 0", "-1"],
    "events_gt_total_treat.csv": ["row 2 (line 3)", "column 'events_treat'", "larger than total_treat"],
    "events_gt_total_control.csv": ["row 2 (line 3)", "column 'events_control'", "larger than total_control"],
    "duplicate_study_outcome.csv": ["duplicate (study_id, outcome)", "rows 1, 2", "column 'study_id'"],
    "control_events_without_total.csv": ["row 1 (line 2)", "column 'total_control'", "events_control is given"],
    "control_total_without_events.csv": ["row 1 (line 2)", "column 'events_control'", "total_control is given"],
    "empty.csv": ["the file is empty"],
    "header_only.csv": ["no data rows"],
    "semicolon_delimited.csv": ["separated by semicolons"],
    "latin1_encoded.csv": ["not UTF-8", "0xfc"],
    "ragged_row.csv": ["row 1 (line 2)", "has 6 fields but the header has 8"],
    "nan_count.csv": ["row 1 (line 2)", "column 'events_treat'", "not a finite whole number"],
    "inf_count.csv": ["row 1 (line 2)", "column 'total_treat'", "not a finite whole number"],
    "zero_total.csv": ["row 1 (line 2)", "column 'total_treat'", "must be > 0"],
    "unknown_count_basis.csv": ["row 1 (line 2)", "column 'count_basis'", "unknown count_basis 'guessed'"],
    "huge_count.csv": ["row 2 (line 3)", "column 'total_treat'", "larger than"],
    "empty_study_id.csv": ["row 2 (line 3)", "column 'study_id'", "must not be empty"],
    "missing_treat_events.csv": ["row 1 (line 2)", "column 'events_treat'", "must not be empty"],
    "single_arm_only.csv": ["outcome 'mortality' has no usable rows", "events_control and total_control"],
    # reported estimates and design (issue 17)
    "estimate_partial_row.csv": ["row 1 (line 2)", "column 'ci_low'", "must not be empty when"],
    "estimate_bad_measure.csv": ["row 1 (line 2)", "column 'measure'", "unknown measure 'HR'"],
    "estimate_outside_ci.csv": ["row 2 (line 3)", "column 'estimate'", "outside its CI"],
    "estimate_nonpositive.csv": ["row 1 (line 2)", "column 'ci_low'", "finite ratio > 0"],
    "estimate_missing_column.csv": ["needs the columns", "column 'ci_high'"],
    "bad_adjusted.csv": ["row 1 (line 2)", "column 'adjusted'", "true or false", "maybe"],
    "bad_design.csv": ["row 2 (line 3)", "column 'design'", "unknown design 'cohort'", "rct"],
    "no_counts_no_estimate.csv": ["row 2 (line 3)", "column 'events_treat'", "counts or a reported estimate"],
}


def _run(args):
    return runner.invoke(app, args)


def test_every_bad_file_has_a_case():
    assert sorted(p.name for p in BAD.glob("*.csv")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_is_rejected_with_location(name):
    res = _run(["freq", "--data", str(BAD / name), "--outcome", "mortality", "--measure", "RR",
                "--method", "DL", "--json"])
    assert res.exit_code == 2, res.output
    msg = res.stderr.strip()
    assert "\n" not in msg, msg  # one line
    assert "Traceback" not in res.output
    assert name in msg
    for frag in CASES[name]:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert res.stdout == ""  # nothing half-printed on stdout


def test_directory_instead_of_file(tmp_path):
    res = _run(["freq", "--data", str(tmp_path), "--outcome", "mortality"])
    assert res.exit_code == 2
    assert "is a directory" in res.stderr


def test_missing_file(tmp_path):
    res = _run(["freq", "--data", str(tmp_path / "nope.csv"), "--outcome", "mortality"])
    assert res.exit_code == 2
    assert "no such file" in res.stderr


def test_unreadable_file(tmp_path, monkeypatch):
    # CI runs as root, for whom chmod 0 does not stop reading: simulate the OS refusing instead
    p = tmp_path / "x.csv"
    p.write_text("study_id,outcome,events_treat,total_treat\nA,m,1,2\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    res = _run(["freq", "--data", str(p), "--outcome", "m", "--measure", "PLO"])
    assert res.exit_code == 2 and "permission denied" in res.stderr


def test_unknown_outcome_requested():
    res = _run(["freq", "--data", str(GOOD), "--outcome", "stroke_recurrence"])
    assert res.exit_code == 2
    assert "unknown outcome 'stroke_recurrence'" in res.stderr
    assert "mortality" in res.stderr  # lists what the file has


def test_outcome_without_control_arms_for_two_arm_measure():
    res = _run(["freq", "--data", str(GOOD), "--outcome", "reocclusion", "--measure", "OR"])
    assert res.exit_code == 2
    assert "has no usable rows" in res.stderr


@pytest.mark.parametrize("args,frag", [
    (["--measure", "PLO", "--method", "MH"], "two-arm method"),
    (["--measure", "RR", "--method", "PETO"], "odds ratio"),
    (["--measure", "OR", "--method", "GLMM"], "PLO"),
    (["--measure", "OR", "--method", "MH", "--hksj"], "--hksj"),
    (["--exclude-basis", "guessed"], "unknown count_basis guessed"),
    (["--cc-to", "sometimes"], "continuity correction"),
    (["--cc-add", "-1"], "continuity correction"),
])
def test_invalid_option_combinations(args, frag):
    res = _run(["freq", "--data", str(GOOD), "--outcome", "mortality", *args])
    assert res.exit_code == 2, res.output
    assert frag in res.stderr


def test_unknown_measure_is_a_usage_error():
    res = _run(["freq", "--data", str(GOOD), "--outcome", "mortality", "--measure", "HR"])
    assert res.exit_code == 2


def test_real_process_prints_no_traceback():
    """The installed entry point, not only the test runner: exit 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "rescuemeta.cli", "freq", "--data", str(BAD / "negative_count.csv"),
                           "--outcome", "mortality"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1
