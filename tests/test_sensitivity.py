"""Prior sensitivity grids: spec validation, the grid, compile-once, psense fields, the resumable cache (also
after SIGKILL), a local process pool and a Dask LocalCluster giving the same rows, the simulation mode, CLI."""

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rescuemeta import sensitivity as sens
from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.errors import InputError
from rescuemeta.fit import FitConfig, fit
from rescuemeta.sampling import default_sampler

from conftest import ROOT

runner = CliRunner()
DATA = str(ROOT / "data" / "studies.csv")
TABLE = load_studies(DATA)


def _spec(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


SMALL = """
outcomes = ["mortality"]
models = ["proportion", "normal"]
tau_priors = ["halfnormal(0.25)", "halfnormal(0.5)"]
inclusion = ["dedup"]
thresholds = [1, 0.8]
seed = 5
"""


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("text, needle", [
    ('tau_priors = ["halfnormal(0.5)"]\ncolour = "red"', "unknown key 'colour'"),
    ('models = ["contrast"]', "'tau_priors' is required"),
    ('tau_priors = ["halfnormal(-1)"]', "tau_priors[0]"),
    ('tau_priors = ["turner(nonsense)"]', "tau_priors[0]"),
    ('tau_priors = ["halfnormal(0.5)"]\ninclusion = ["everything"]', "'inclusion'"),
    ('tau_priors = ["halfnormal(0.5)"]\nmodels = ["glmm"]', "'models'"),
    ('tau_priors = ["halfnormal(0.5)"]\ndraws = "many"', "'draws' must be an integer"),
    ('tau_priors = ["halfnormal(0.5)"]\nthresholds = [0]', "'thresholds'"),
    ('tau_priors = "halfnormal(0.5)"', "'tau_priors' must be a list"),
    ('tau_priors = [', "not valid TOML"),
    ('tau_priors = ["halfnormal(0.5)"]\n[simulation]\nk = 0', "simulation.k"),
    ('tau_priors = ["halfnormal(0.5)"]\n[simulation]\nspeed = 1', "unknown key 'simulation.speed'"),
])
def test_spec_errors_name_file_and_key(tmp_path, text, needle):
    p = _spec(tmp_path, text)
    with pytest.raises(InputError) as e:
        sens.load_sensitivity(p)
    assert needle in str(e.value) and str(p) in str(e.value)
    r = runner.invoke(app, ["sensitivity", "--data", DATA, "--spec", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and needle in r.output


def test_shipped_specs_are_valid_and_cover_the_issue():
    spec = sens.load_sensitivity(ROOT / "models" / "sensitivity.toml")
    cfgs = sens.grid(spec, TABLE)
    taus = {c["tau_prior"] for c in cfgs}
    for needed in ("halfnormal(0.25)", "halfnormal(0.5)", "halfnormal(1)", "halfcauchy(0.5)", "uniform(0, 2)",
                   "invgamma(0.001, 0.001)", "turner(all_cause_mortality, nonpharma_vs_placebo)",
                   "turner(adverse_events, nonpharma_vs_placebo)"):
        assert needed in taus
    assert any(t.startswith("exponential") for t in taus)
    assert {c["inclusion"] for c in cfgs} == {"dedup", "all_studies", "exclude_derived"}
    # contrast: 8 tau priors, proportion: 7 (no Turner prior: it describes log odds ratios)
    assert len(cfgs) == len(TABLE.outcomes) * (8 + 7) * 3
    assert not any(c["tau_prior"].startswith("turner") for c in cfgs if c["model"] == "proportion")
    # the Turner prior matches the outcome type
    assert {c["tau_prior"] for c in cfgs if c["outcome"] == "mortality" and c["tau_prior"].startswith("turner")} == \
        {"turner(all_cause_mortality, nonpharma_vs_placebo)"}
    sim = sens.load_sensitivity(ROOT / "models" / "simulation.toml")
    assert sim.simulation is not None and sim.simulation.replications >= 50


def test_grid_runs_compiles_once_and_reports_psense(tmp_path):
    spec = sens.load_sensitivity(_spec(tmp_path, SMALL))
    cfgs = sens.grid(spec, TABLE)
    before = default_sampler().compiles
    res = sens.run_grid(cfgs, DATA, cache_dir=str(tmp_path / "cache"))
    assert default_sampler().compiles - before <= 1  # two tau-prior values, one proportion structure
    assert res.computed == 4 and res.cached == 0
    for r in res.rows:
        assert r["status"] == "ok" and r["k"] > 0
        assert r["effect_low"] <= r["effect_median"] <= r["effect_high"]
        for key in ("psens_prior_mu", "psens_prior_tau", "psens_lik_mu", "psens_lik_tau", "psens_khat"):
            assert r[key] is not None and r[key] >= 0
        assert r["psens_diag_tau"] in ("prior-data conflict", "strong prior / weak likelihood", "weak likelihood", "-")
    normal = [r for r in res.rows if r["model"] == "normal"]
    assert all(r["method"] == "exact" and "p_or_lt_1" in r for r in normal)
    # Bayes factors per prior (issue 18): exact for the normal model, each row's equal to a fit with that prior;
    # they move with the tau prior; the sampled model's are not computed (null)
    for r in normal:
        ex = fit(TABLE, FitConfig(outcome=r["outcome"], model="normal", measure="OR", tau_prior=r["tau_prior"],
                                  effect_prior=r["effect_prior"])).exact
        assert r["bf01_tau"] == pytest.approx(ex.bayes_factors()["bf01_tau"], rel=1e-12)
    assert normal[0]["bf01_tau"] != pytest.approx(normal[1]["bf01_tau"], rel=1e-3)
    assert all(r["bf01_mu"] is None for r in res.rows if r["model"] == "proportion")
    # a tighter tau prior gives a smaller posterior tau (the prior values really reached the compiled model)
    prop = [r for r in res.rows if r["model"] == "proportion"]
    assert prop[0]["tau_median"] < prop[1]["tau_median"]


def test_cache_resume_and_corrupt_entries(tmp_path):
    spec = sens.load_sensitivity(_spec(tmp_path, SMALL.replace('"proportion", ', "")))  # normal only: fast
    cfgs = sens.grid(spec, TABLE)
    cache = tmp_path / "cache"
    first = sens.run_grid(cfgs, DATA, cache_dir=str(cache))
    again = sens.run_grid(cfgs, DATA, cache_dir=str(cache))
    assert again.computed == 0 and again.cached == 2
    assert _strip(again.rows) == _strip(first.rows)
    entries = sorted(cache.glob("*.json"))
    entries[0].unlink()
    entries[1].write_text('{"truncated": ')  # a corrupt entry is recomputed, never trusted
    (cache / ".x.json.abc.part").write_text("partial")
    third = sens.run_grid(cfgs, DATA, cache_dir=str(cache))
    assert third.computed == 2 and _strip(third.rows) == _strip(first.rows)
    assert not list(cache.glob(".*.part"))


def test_process_pool_matches_in_process(tmp_path):
    spec = sens.load_sensitivity(_spec(tmp_path, SMALL.replace('"proportion", ', "")))
    cfgs = sens.grid(spec, TABLE)
    local = sens.run_grid(cfgs, DATA, cache_dir=None, workers=1)
    pool = sens.run_grid(cfgs, DATA, cache_dir=None, workers=2)
    assert _strip(pool.rows) == _strip(local.rows)


@pytest.mark.slow  # the cluster of separate processes below covers Dask on every run
def test_dask_localcluster_matches_local_path(tmp_path):
    from distributed import Client, LocalCluster

    spec = sens.load_sensitivity(_spec(tmp_path, SMALL))
    cfgs = sens.grid(spec, TABLE)
    local = sens.run_grid(cfgs, DATA, cache_dir=None)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        remote = sens.run_grid(cfgs, DATA, cache_dir=str(tmp_path / "cache"), scheduler=client)
        # the same through the address, as --scheduler tcp://... does (all rows now come from the cache)
        again = sens.run_grid(cfgs, DATA, cache_dir=str(tmp_path / "cache"), scheduler=cluster.scheduler_address)
    assert _strip(remote.rows) == _strip(local.rows)
    assert again.cached == len(cfgs) and _strip(again.rows) == _strip(local.rows)


def test_dask_cluster_of_separate_processes_in_another_directory(tmp_path, monkeypatch):
    """As a user would: `dask scheduler`, then `dask worker` started from another directory (as on another
    machine), then `rescuemeta sensitivity --scheduler` from the project with a relative data path. The workers
    are sent the study table, not the path (issue 19: every task failed with FileNotFoundError), and the rows
    equal those of the local path; the cache is written by the client. (The client runs in this process, from
    the project directory: the scheduler and the worker are the separate processes that matter.)"""
    from pathlib import Path

    dask = str(Path(sys.executable).parent / "dask")
    sched_file, elsewhere = tmp_path / "scheduler.json", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in __import__("os").environ.items()}
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(sched_file), "--port", "0",
                               "--no-dashboard"], cwd=elsewhere, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not sched_file.exists():
            time.sleep(0.1)
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard"], cwd=elsewhere, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        time.sleep(0.5)
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            address = client.scheduler.address
        spec = _spec(tmp_path, 'outcomes = ["mortality", "sich"]\nmodels = ["normal"]\n'
                     'tau_priors = ["halfnormal(0.25)", "halfnormal(0.5)", "halfcauchy(0.5)"]\ninclusion = ["dedup"]\n')
        out = tmp_path / "out"
        monkeypatch.chdir(ROOT)
        r = runner.invoke(app, ["sensitivity", "--data", "data/studies.csv", "--spec", str(spec), "--out", str(out),
                                "--no-plots", "--json", "--scheduler", address])
        assert r.exit_code == 0 and "Traceback" not in r.stderr, r.output[-3000:]
        rows = json.loads(r.stdout)
        assert len(rows) == 6 and all(x["status"] == "ok" for x in rows)
        local = sens.run_grid(sens.grid(sens.load_sensitivity(spec), TABLE), DATA, cache_dir=None)
        plain = [{k: v for k, v in x.items() if k != "tau_density"} for x in _strip(local.rows)]
        assert _strip(rows) == json.loads(json.dumps(plain))
        assert len(list((out / "cache").glob("*.json"))) == 6 and not list(elsewhere.rglob("*.json"))
        # a simulation study on the same cluster (issue 19): exact normal-normal fits of simulated log ORs, sent in
        # chunks of runner.CHUNK; rows equal the local run's, cached by the client, and a re-run computes nothing
        sim = _spec(tmp_path, 'tau_priors = ["halfnormal(0.5)"]\nseed = 5\n[simulation]\nmodel = "normal"\nk = 4\n'
                    'n_per_arm = 60\nbaseline_risk = 0.3\nmu = -0.4\ntau = 0.2\nreplications = 150\n', name="sim.toml")
        sim_out = tmp_path / "sim"
        cmd = ["sensitivity", "--spec", str(sim), "--out", str(sim_out), "--json", "--scheduler", address]
        r = runner.invoke(app, cmd)
        assert r.exit_code == 0 and "Traceback" not in r.stderr, r.output[-3000:]
        d = json.loads(r.stdout)
        assert d["computed"] == 150 and all(x["status"] == "ok" for x in d["rows"])
        local = sens.run_grid(sens.simulation_grid(sens.load_sensitivity(sim)), DATA, cache_dir=None)
        assert d["rows"] == json.loads(json.dumps(local.rows))
        assert len(list((sim_out / "cache").glob("*.json"))) == 150
        again = json.loads(runner.invoke(app, cmd).stdout)
        assert again["cached"] == 150 and again["computed"] == 0 and again["summary"] == d["summary"]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow  # ~50 s; the grid cache is written by the same atomic writer test_kill checks on every run
def test_sigkill_midway_leaves_a_usable_cache_and_the_next_run_completes(tmp_path):
    spec = _spec(tmp_path, SMALL.replace('tau_priors = ["halfnormal(0.25)", "halfnormal(0.5)"]',
                                         'tau_priors = ["halfnormal(0.2)", "halfnormal(0.3)", "halfnormal(0.4)", '
                                         '"halfnormal(0.6)", "halfnormal(0.8)", "halfnormal(1)"]'))
    out = tmp_path / "out"
    cache = out / "cache"
    cmd = [sys.executable, "-m", "rescuemeta.cli", "sensitivity", "--data", DATA, "--spec", str(spec), "--out", str(out),
           "--no-plots"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("*.json")):  # kill right after the first row
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(cache.glob("*.json"))
    assert 0 < len(done) < 12, "the kill should land mid-grid"
    for f in done:
        json.loads(f.read_text())  # every entry that exists is complete
    assert not (out / "sensitivity.csv").exists()
    r = subprocess.run(cmd + ["--json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 12 and all(x["status"] == "ok" for x in rows)
    assert not list(cache.glob(".*.part"))
    df = pd.read_parquet(out / "sensitivity.parquet")
    assert len(df) == 12


def test_cli_outputs_tables_and_figures(tmp_path):
    p = _spec(tmp_path, SMALL)
    out = tmp_path / "out"
    r = runner.invoke(app, ["sensitivity", "--data", DATA, "--spec", str(p), "--out", str(out)])
    assert r.exit_code == 0, r.output
    csv = pd.read_csv(out / "sensitivity.csv")
    pq = pd.read_parquet(out / "sensitivity.parquet")
    assert len(csv) == len(pq) == 4
    for col in ("outcome", "model", "tau_prior", "effect_prior", "inclusion", "k", "mu_median", "effect_median",
                "effect_low", "effect_high", "tau_median", "psens_prior_tau", "psens_khat", "diag_ok"):
        assert col in csv.columns
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == ["sensitivity_mortality_normal.png", "sensitivity_mortality_proportion.png",
                    "tau_prior_posterior_mortality_normal.png", "tau_prior_posterior_mortality_proportion.png"]
    assert "from the cache" in r.stdout
    r = runner.invoke(app, ["sensitivity", "--data", DATA, "--spec", str(p), "--out", str(out), "--outcome", "sich"])
    assert r.exit_code == 2 and "--outcome" in r.output


def test_simulation_mode(tmp_path):
    p = _spec(tmp_path, """
tau_priors = ["halfnormal(0.5)", "halfnormal(1)"]
draws = 500
chains = 2
seed = 4
[simulation]
model = "proportion"
k = 4
n_per_arm = 60
baseline_risk = 0.3
mu = -0.8
tau = 0.3
replications = 6
""")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sensitivity", "--spec", str(p), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["computed"] == 12 and len(d["rows"]) == 12
    assert [s["tau_prior"] for s in d["summary"]] == ["halfnormal(0.5)", "halfnormal(1)"]
    for s in d["summary"]:
        assert 0 <= s["coverage_mu"] <= 1 and s["width_mu"] > 0 and s["replications"] == 6
    # the wider half-normal allows larger tau: wider intervals for mu on the same data sets (one prior family, so
    # no second compilation)
    assert d["summary"][1]["width_mu"] > d["summary"][0]["width_mu"]
    assert (out / "simulation_summary.csv").exists()
    r2 = runner.invoke(app, ["sensitivity", "--spec", str(p), "--out", str(out), "--json"])
    d2 = json.loads(r2.stdout)
    assert d2["cached"] == 12 and d2["summary"] == d["summary"]


def test_simulation_mode_normal_model_is_exact_and_covers(tmp_path):
    """The ``normal`` simulation model: two-arm counts drawn as for ``contrast``, analysed as a metafor user would
    (escalc log ORs, 1/2 added to zero cells) by the exact normal-normal posterior. Each row's quantiles are those
    of :class:`NormalNormalPosterior` on that data set, and over 300 replications the 95% intervals of mu cover
    the truth at a rate within 4 binomial SEs of 95% or above it (weakly informative priors over-cover)."""
    from rescuemeta.exact import NormalNormalPosterior
    from rescuemeta.simulate import _sim_data, run_sim_one, summarize_simulation

    p = _spec(tmp_path, 'tau_priors = ["halfnormal(0.5)"]\nseed = 2\n[simulation]\nmodel = "normal"\nk = 6\n'
              'n_per_arm = 100\nbaseline_risk = 0.3\nmu = -0.4\ntau = 0.2\nreplications = 300\n')
    cfgs = sens.simulation_grid(sens.load_sensitivity(p))
    rows = [run_sim_one(c) for c in cfgs]
    _, md = _sim_data(cfgs[7])
    a = md.arrays
    assert md.kind == "normal" and len(a["y"]) == 6 and np.all(np.isfinite(a["y"])) and np.all(a["s"] > 0)
    post = NormalNormalPosterior(a["y"], a["s"], sens.parse("halfnormal(0.5)"), 0.0, 4.0)
    assert rows[7]["mu_median"] == pytest.approx(post.mu_quantile(0.5), abs=1e-6)
    assert rows[7]["tau_high"] == pytest.approx(post.tau_quantile(0.975), abs=1e-6)
    (s,) = summarize_simulation(rows)
    assert s["failed"] == 0 and s["coverage_mu"] >= 0.95 - 4 * math.sqrt(0.95 * 0.05 / 300)
    assert abs(s["bias_mu"]) < 4 * s["rmse_mu"] / math.sqrt(300) + 0.02
    with pytest.raises(InputError, match="normal effect priors"):
        sens.load_sensitivity(_spec(tmp_path, 'tau_priors = ["halfnormal(0.5)"]\neffect_priors = ["student_t(3, 0, 1)"]'
                                    '\n[simulation]\nmodel = "normal"\n'))


@pytest.mark.slow
def test_full_shipped_grid_runs_for_every_outcome(tmp_path):
    """models/sensitivity.toml on data/studies.csv: 240 configurations (about 3.5 min on 2 workers)."""
    spec = sens.load_sensitivity(ROOT / "models" / "sensitivity.toml")
    cfgs = sens.grid(spec, TABLE)
    res = sens.run_grid(cfgs, DATA, cache_dir=str(tmp_path / "cache"), workers=2)
    by_status = {}
    for r in res.rows:
        by_status.setdefault(r["status"], []).append(r)
    assert {r["outcome"] for r in by_status["ok"]} == set(TABLE.outcomes)
    # only the contrast model for reocclusion (no control arms) is not estimable
    assert {(r["outcome"], r["model"]) for r in by_status.get("unavailable", [])} == {("reocclusion", "contrast")}
    # guard failures are reported with their diagnostics, never dropped; they stay a small minority
    assert len(by_status.get("failed", [])) <= 0.1 * len(res.rows)
    assert all("did not converge" in r["reason"] for r in by_status.get("failed", []))


def test_benefit_follows_the_outcomes_declared_direction():
    """Functional independence is declared 'more events are better': its rows give P(OR > 1) and P(OR > 1.25)
    (the thresholds 1 and 0.8 mirrored), mortality's give P(OR < 1) and P(OR < 0.8); both say which direction."""
    cfg = {"outcome": "functional_independence", "model": "normal", "measure": "OR", "tau_prior": "halfnormal(0.5)",
           "effect_prior": "normal(0, 4)", "baseline_prior": "normal(0, 10)", "inclusion": "dedup",
           "thresholds": [1.0, 0.8], "draws": 500, "tune": 500, "chains": 4, "seed": 1}
    fi = sens.run_one(cfg, DATA)
    assert fi["benefit"] == "more events" and sens.probability_keys(fi) == ["p_or_gt_1", "p_or_gt_1.25"]
    assert sens.probability_label("p_or_gt_1.25") == "P(OR > 1.25)"
    mort = sens.run_one({**cfg, "outcome": "mortality"}, DATA)
    assert mort["benefit"] == "fewer events" and sens.probability_keys(mort) == ["p_or_lt_1", "p_or_lt_0.8"]
    # the exact model's P(OR > 1) is 1 - P(OR < 1)
    from rescuemeta.fit import FitConfig, fit
    from rescuemeta.queries import probability

    res = fit(TABLE, FitConfig(outcome="functional_independence", model="normal", measure="OR"))
    assert fi["p_or_gt_1"] == pytest.approx(1 - probability(res, "OR < 1")["probability"], abs=1e-9)


def _grid_cfg(tau_prior, effect_prior="normal(0, 4)", outcome="mortality", seed=3):
    return {"outcome": outcome, "model": "contrast", "measure": "OR", "tau_prior": tau_prior,
            "effect_prior": effect_prior, "baseline_prior": "normal(0, 10)", "inclusion": "dedup", "draws": 1000,
            "tune": 1000, "chains": 4, "seed": seed, "thresholds": [1.0, 0.8]}


def test_prior_grid_reweights_earlier_fits_and_agrees_with_refits():
    """Issue 19: a grid over tau priors (and one effect prior) on the same model and data fits the first
    configuration and reweights the next ones (PSIS on the prior ratio, k-hat <= 0.7, ESS >= 400); each
    reweighted row says so and agrees with a refit: posterior medians of mu and tau and P(OR < 1) within 3
    combined Monte Carlo SEs (the SE from each row's ESS; the reweighted ESS is the smallest of the reference's
    times the weights' relative efficiency and each probability's own importance-sampling ESS)."""
    import math

    sens._REFERENCES.clear()
    priors = ["halfnormal(0.5)", "halfnormal(0.4)", "halfnormal(0.6)", "halfnormal(0.8)", "exponential(2)"]
    cfgs = [_grid_cfg(p) for p in priors] + [_grid_cfg("halfnormal(0.5)", "normal(0, 2)")]
    rows = [sens.run_one(c, DATA) for c in cfgs]
    assert rows[0]["reweighted_from"] is None and rows[0]["method"] == "nuts"
    rw = [(c, r) for c, r in zip(cfgs, rows) if r["reweighted_from"] is not None]
    assert len(rw) >= 4
    for c, r in rw:
        # (a k-hat below 0 means near-uniform weights)
        assert r["method"] == "nuts (reweighted)" and r["reweight_khat"] <= 0.7 and r["diag_ess_bulk_min"] >= 400
        ref = sens.run_one(c, DATA, reweight=False)
        assert ref["reweighted_from"] is None

        for q in ("mu_median", "tau_median", "p_or_lt_1", "p_or_lt_0.8"):
            tol = 3 * math.hypot(r[q + "_mcse"], ref[q + "_mcse"]) + 1e-3
            assert abs(r[q] - ref[q]) < tol, (c["tau_prior"], q, r[q], ref[q], tol)


def test_grid_rows_carry_monte_carlo_ses():
    """A sampled row's intervals are its fit's summary's. Each sampled row states the Monte Carlo SE of its medians
    and probabilities: for a fit, ArviZ's (quantile
    MCSE of the median, MCSE of the indicator's mean); for a reweighted row, from the reweighting's ESS (the
    resampled draws repeat, so ArviZ would understate it): the probability's own importance-sampling ESS."""
    import math

    import arviz as az
    import numpy as np

    sens._REFERENCES.clear()
    a = sens.run_one(_grid_cfg("halfnormal(0.5)"), DATA)
    b = sens.run_one(_grid_cfg("halfnormal(0.6)"), DATA)
    assert a["reweighted_from"] is None and b["reweighted_from"] == "halfnormal(0.5)"
    ref = sens._REFERENCES[next(iter(sens._REFERENCES))][0]
    # the row's intervals, read from the draws, are the fit's summary's
    summ = ref.summary()
    for col, key in (("mu", "mu"), ("tau", "tau"), ("effect", "or"), ("rr", "rr")):
        assert [a[f"{col}_low"], a[f"{col}_median"], a[f"{col}_high"]] == pytest.approx(
            [summ[key]["q025"], summ[key]["q50"], summ[key]["q975"]], rel=1e-12), col
    assert a["k"] == summ["k"] and a["diag_ess_bulk_min"] == summ["diagnostics"]["ess_bulk_min"]
    tau = ref.idata.posterior["tau"].values
    assert a["tau_median_mcse"] == pytest.approx(float(az.mcse(tau, method="quantile", prob=0.5)))
    from rescuemeta.fit import FitConfig, importance_weights
    from rescuemeta.queries import indicator

    ind = indicator(ref, "OR < 1")
    assert a["p_or_lt_1_mcse"] == pytest.approx(float(np.asarray(az.mcse(ind, method="mean")).ravel()[0]), rel=1e-6)

    fc = sens._fit_config(_grid_cfg("halfnormal(0.6)"))
    w, info = importance_weights(ref, fc, functions=[lambda r: indicator(r, "OR < 1")])
    assert w is not None and isinstance(fc, FitConfig)
    p = b["p_or_lt_1"]
    assert b["p_or_lt_1_mcse"] == pytest.approx(math.sqrt(p * (1 - p) / info["ess_functions"][0]))
    assert 0 < b["tau_median_mcse"] < 0.1 and 0 < b["mu_median_mcse"] < 0.1
    assert "p_or_lt_1_mcse" not in sens.probability_keys(b)


def test_reweighting_checks_each_reported_probability_by_its_own_ess():
    """A tail the new prior up-weights: the weights' average efficiency accepts the reweighting, but the
    probability of that tail has a far smaller importance-sampling ESS (sum w (f - p)^2 / (S sum w^2 (f - p)^2)
    times the reference's ESS), and with it as a function the reweighting is refused (the grid then refits)."""
    import numpy as np

    from rescuemeta.fit import reweight

    ref = fit(TABLE, FitConfig("mortality", "contrast", tau_prior="halfnormal(0.5)", seed=3))
    new = FitConfig("mortality", "contrast", tau_prior="halfnormal(0.8)", seed=3)
    cut = float(np.quantile(ref.idata.posterior["tau"].values, 0.995))  # a tail where the weights are largest

    def tail(r):
        return (r.idata.posterior["tau"].values > cut).astype(float)

    res, info = reweight(ref, new)
    assert res is not None and info["ess"] >= 400
    res_f, info_f = reweight(ref, new, functions=[tail])
    assert res_f is None and info_f["ess"] < 400 < info["ess"]
    res_c, info_c = reweight(ref, new, functions=[lambda r: np.ones_like(tail(r))])  # a constant: no variance
    assert res_c is not None and info_c["ess"] == info["ess"]


def test_reweighting_refuses_a_distant_prior_and_another_model():
    """A prior far from the reference's (k-hat > 0.7 or ESS < 400) is not reweighted: the caller refits. A configuration that
    differs in anything but the priors on tau and mu (here the outcome) cannot be reweighted at all."""
    from rescuemeta.fit import reweight

    ref = fit(TABLE, FitConfig("mortality", "contrast", tau_prior="halfnormal(2)", seed=3))
    res, info = reweight(ref, FitConfig("mortality", "contrast", tau_prior="halfnormal(0.02)", seed=3))
    assert res is None and (info["pareto_k"] > 0.7 or info["ess"] < 400)  # (here: ESS; few draws have tau ~ 0.02)
    res, info = reweight(ref, FitConfig("mortality", "contrast", tau_prior="halfnormal(1.5)", seed=3))
    assert res is not None and info["pareto_k"] <= 0.7
    assert res.idata.attrs["tau_prior"] == "halfnormal(1.5)" and "reweighted_from" in res.idata.attrs
    assert res.idata.log_prior["tau"].values == pytest.approx(
        FitConfig("x", tau_prior="halfnormal(1.5)").priors()["tau"].logpdf(res.idata.posterior["tau"].values))
    with pytest.raises(ValueError, match="outcome"):
        reweight(ref, FitConfig("sich", "contrast", tau_prior="halfnormal(1.5)", seed=3))


def test_psense_from_per_draw_totals_equals_arviz_on_the_whole_fit():
    """diagnostics.psense gives ArviZ's psens each component's per-draw total (issue 19: the stacking of every
    study's log-likelihood and log-prior values cost ~0.1 s per grid row); the sensitivities must equal az.psens on
    the fit's whole InferenceData (contrast: the baselines' log prior too)."""
    import arviz as az

    from rescuemeta import diagnostics

    res = fit(TABLE, FitConfig("mortality", "contrast", seed=5, draws=500))
    assert len(res.idata.log_prior.data_vars) >= 3  # mu, tau and the study baselines
    ours = diagnostics.psense(res.idata)
    for comp in ("prior", "likelihood"):
        ref = az.psens(res.idata, component=comp, var_names=["mu", "tau"])
        for v in ("mu", "tau"):
            assert ours[v][comp] == pytest.approx(float(ref[v]), rel=1e-9, abs=1e-12), (comp, v)


def test_grid_reads_fitted_rows_from_the_fit_cache(tmp_path, monkeypatch):
    """Issue 19: a grid run with ``fit_cache`` (the report passes its main fits') takes a fitted row's draws from
    that cache when an earlier fit of the same configuration is there, instead of sampling again: the same row,
    and no sampling."""
    from rescuemeta.fit import FitConfig, fit_cached

    cfg = {**_grid_cfg("halfnormal(0.5)"), "draws": 500}
    plain = sens.run_grid([cfg], str(DATA), cache_dir=None)
    fc = sens._fit_config(cfg)
    assert isinstance(fc, FitConfig)
    fit_cached(load_studies(DATA), fc, tmp_path / "fits")  # what the report's main analysis leaves behind
    calls = []
    real = sens.fit
    monkeypatch.setattr(sens, "fit", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr("rescuemeta.fit.fit", lambda *a, **k: calls.append(a) or real(*a, **k))
    cached = sens.run_grid([cfg], str(DATA), cache_dir=None, fit_cache=str(tmp_path / "fits"))
    assert calls == []  # read, not sampled
    drop = ("seconds",)
    assert {k: v for k, v in cached.rows[0].items() if k not in drop} == \
        {k: v for k, v in plain.rows[0].items() if k not in drop}
    # another configuration is not in the cache: fitted (and then kept there)
    other = {**cfg, "tau_prior": "halfcauchy(0.5)", "reweight": False}
    sens.run_grid([other], str(DATA), cache_dir=None, fit_cache=str(tmp_path / "fits"))
    assert len(calls) == 1 and len(list((tmp_path / "fits").glob("*.npz"))) == 2
