"""Same seed, same lock file -> identical JSON from `fit`, `prob` and `sensitivity` (each run twice, from
scratch: no cache shared between the two runs)."""

import json

from typer.testing import CliRunner

from rescuemeta.cli import app

from conftest import ROOT

runner = CliRunner()
DATA = str(ROOT / "data" / "studies.csv")


def _json(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _drop_seconds(o):
    if isinstance(o, dict):
        return {k: _drop_seconds(v) for k, v in o.items() if k != "seconds"}
    if isinstance(o, list):
        return [_drop_seconds(v) for v in o]
    return o


def test_fit_is_deterministic():
    args = ["fit", "--data", DATA, "--outcome", "sich", "--model", "proportion", "--seed", "12", "--json"]
    assert _drop_seconds(_json(args)) == _drop_seconds(_json(args))


def test_prob_is_deterministic():
    args = ["prob", "--data", DATA, "--outcome", "mortality", "RR < 0.8", "NNT < 10", "OR > 1.2", "--predictive",
            "--seed", "12", "--json"]
    assert _json(args) == _json(args)


def test_sensitivity_is_deterministic(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('outcomes = ["sich"]\nmodels = ["proportion", "normal"]\n'
                    'tau_priors = ["halfnormal(0.3)", "halfcauchy(0.5)"]\nseed = 12\n')
    runs = [_json(["sensitivity", "--data", DATA, "--spec", str(spec), "--out", str(tmp_path / f"o{i}"),
                   "--no-plots", "--json"]) for i in (1, 2)]
    assert _drop_seconds(runs[0]) == _drop_seconds(runs[1])
    assert all(r["status"] == "ok" for r in runs[0])
