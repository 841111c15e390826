"""Malformed TOML specs in tests/data/bad/: exit code 2, one line naming the file and the key, no traceback,
for every command that reads a spec; and valid-but-unusual files (BOM, CRLF, Unicode ids) load."""

import shutil

import pytest
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.data import load_studies

from conftest import ROOT

BAD = ROOT / "tests" / "data" / "bad"
DATA = str(ROOT / "data" / "studies.csv")
runner = CliRunner()

CASES = {
    "primary_unknown_key.toml": ("primary", "unknown key 'colour'"),
    "primary_negative_scale.toml": ("primary", "key 'tau_prior'"),
    "primary_bad_query.toml": ("primary", "key 'queries'"),
    "primary_bad_figure_format.toml": ("primary", "key 'figure_formats': ['gif'] not among png, svg, pdf"),
    "sensitivity_turner_nonsense.toml": ("sensitivity", "tau_priors[0]"),
    "sensitivity_not_toml.toml": ("sensitivity", "not valid TOML"),
    "sensitivity_draws_not_int.toml": ("sensitivity", "'draws' must be an integer"),
    "primary_turner_for_proportion.toml": ("primary", "key 'tau_prior': tau prior 'turner(all_cause_mortality, "
                                           "nonpharma_vs_placebo)' does not apply to the proportion model"),
    "sensitivity_turner_for_proportion.toml": ("sensitivity", "key 'tau_priors[1]': tau prior 'turner(matched)' does "
                                               "not apply to the proportion model"),
}


def test_every_bad_spec_has_a_case():
    assert sorted(p.name for p in BAD.glob("*.toml")) == sorted(CASES)
    assert len(list(BAD.iterdir())) >= 25  # the whole corpus: CSV and TOML


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_spec_is_rejected_with_file_and_key(name, tmp_path):
    kind, needle = CASES[name]
    path = str(BAD / name)
    commands = ([["fit", "--all", "--data", DATA, "--spec", path], ["analyze", "--data", DATA, "--spec", path,
                 "--out", str(tmp_path / "r")]] if kind == "primary" else
                [["sensitivity", "--data", DATA, "--spec", path, "--out", str(tmp_path / "s")]])
    for args in commands:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        msg = r.stderr.strip()
        assert "\n" not in msg and needle in msg and name in msg, msg
        assert "Traceback" not in r.output
    assert not (tmp_path / "r" / "index.html").exists()


def test_spec_that_is_a_directory_or_missing(tmp_path):
    for p, needle in ((tmp_path, "is a directory"), (tmp_path / "none.toml", "not found")):
        r = runner.invoke(app, ["sensitivity", "--data", DATA, "--spec", str(p), "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and needle in r.stderr


def test_bom_crlf_and_unicode_ids_load(tmp_path):
    src = (ROOT / "data" / "studies.csv").read_text(encoding="utf-8")
    ref = load_studies(DATA).frame.drop(columns=["_line"]).reset_index(drop=True)
    bom = tmp_path / "bom_crlf.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + src.replace("\n", "\r\n").encode("utf-8"))
    got = load_studies(bom).frame.drop(columns=["_line"]).reset_index(drop=True)
    assert got.equals(ref)
    uni = tmp_path / "unicode.csv"
    uni.write_text(src.replace("Chang2018", "Chāng–2018 (Śląsk) 中风"), encoding="utf-8")
    t = load_studies(uni)
    assert "Chāng–2018 (Śląsk) 中风" in set(t.frame["study_id"])
    r = runner.invoke(app, ["fit", "--data", str(uni), "--outcome", "mortality", "--model", "normal", "--json"])
    assert r.exit_code == 0 and "中风" in r.stdout


def test_unwritable_output_directory(tmp_path):
    if shutil.os.geteuid() == 0:
        # root ignores permissions: use a path under a regular file instead (cannot be a directory)
        f = tmp_path / "f"
        f.write_text("x")
        out = f / "report"
    else:  # pragma: no cover - CI runs as root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "report"
    r = runner.invoke(app, ["sensitivity", "--data", DATA, "--spec", str(ROOT / "models" / "sensitivity.toml"),
                            "--out", str(out)])
    assert r.exit_code == 2 and "not a directory" in r.stderr
