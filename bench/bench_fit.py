"""Benchmark: every outcome of the primary analysis with rescuemeta (nutpie, compile cache, padded models)
against the same models with plain ``pm.sample`` defaults, side by side in one run; and the marginal cost of
one more prior configuration on a compiled model.

    .venv/bin/python bench/bench_fit.py [--draws 1000] [--out BENCHMARKS.md]

Writes the results table into BENCHMARKS.md between the markers ``<!-- bench_fit:begin -->`` and
``<!-- bench_fit:end -->``. Timing belongs here, not in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rescuemeta.data import load_studies  # noqa: E402
from rescuemeta.errors import InputError  # noqa: E402
from rescuemeta.fit import prepare  # noqa: E402
from rescuemeta.models import build_model  # noqa: E402
from rescuemeta.sampling import Sampler  # noqa: E402
from rescuemeta.spec import load_primary  # noqa: E402


def ess_min(idata, var):
    return float(np.min(az.ess(idata, var_names=[var], method="bulk")[var].values))


def configs(draws):
    table = load_studies(ROOT / "data" / "studies.csv")
    spec = load_primary(ROOT / "models" / "primary.toml")
    out = []
    for cfg in spec.configs(table.outcomes, draws=draws):
        try:
            out.append((cfg, prepare(table, cfg)))
        except InputError:
            pass  # e.g. no control arms for the contrast model
    return out


def run_rescuemeta(items, draws):
    from rescuemeta import compiled

    sampler = Sampler(backend="nutpie")
    rows = []
    t_all = time.perf_counter()
    for cfg, prep in items:
        p = cfg.priors()
        t0 = time.perf_counter()
        idata, diag = sampler.sample(prep.model_data, p["tau"], p["effect"],
                                     p["baseline"] if cfg.model == "contrast" else None,
                                     draws=draws, tune=1000, chains=4, seed=cfg.seed)
        wall = time.perf_counter() - t0
        rows.append({"fit": f"{cfg.outcome}/{cfg.model}", "wall": wall, "sampling": idata.attrs["sampling_seconds"],
                     "ess_mu": ess_min(idata, "mu"), "ess_tau": ess_min(idata, "tau"), "div": diag.divergences,
                     "attempts": diag.attempts})
    return rows, time.perf_counter() - t_all, {"compiles": sampler.compiles, "compile_s": sampler.compile_seconds,
                                               "path": compiled.last_path}


def run_pm_sample(items, draws):
    import pymc as pm

    rows = []
    t_all = time.perf_counter()
    for cfg, prep in items:
        p = cfg.priors()
        t0 = time.perf_counter()
        model = build_model(prep.model_data, p["tau"], p["effect"], p["baseline"] if cfg.model == "contrast" else None)
        with model:
            idata = pm.sample(draws=draws, tune=1000, chains=4, cores=2, random_seed=cfg.seed, progressbar=False,
                              compute_convergence_checks=False)
        wall = time.perf_counter() - t0
        rows.append({"fit": f"{cfg.outcome}/{cfg.model}", "wall": wall,
                     "sampling": float(idata.sample_stats.attrs.get("sampling_time", float("nan"))),
                     "ess_mu": ess_min(idata, "mu"), "ess_tau": ess_min(idata, "tau"),
                     "div": int(idata.sample_stats["diverging"].sum()), "attempts": 1})
    return rows, time.perf_counter() - t_all


def cold_run(tool, draws):
    """``tool``'s fits in a new process whose PyTensor compile directory (C and numba caches) is empty."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rescuemeta-cold-") as d:
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={d}", "NUMBA_CACHE_DIR": f"{d}/numba"}
        r = subprocess.run([sys.executable, __file__, "--fits-only", tool, "--draws", str(draws)], env=env,
                           capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def fits_only(tool, draws):
    import json
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("pymc").setLevel(logging.ERROR)
    items = configs(draws)
    if tool == "rescuemeta":
        rows, total, info = run_rescuemeta(items, draws)
    else:
        rows, total = run_pm_sample(items, draws)
        info = {}
    print(json.dumps({"total": total, "div": sum(r["div"] for r in rows), **info}))


def marginal_prior_cost(items, draws, n=10):
    """A warm sampler: one fit per new tau-prior value on an already compiled structure."""
    cfg, prep = next((c, p) for c, p in items if c.model == "contrast")
    sampler = Sampler()
    p = cfg.priors()
    sampler.sample(prep.model_data, p["tau"], p["effect"], p["baseline"], draws=draws, chains=4, seed=1)
    from rescuemeta.priors import parse

    times = []
    for i, scale in enumerate(np.linspace(0.2, 1.5, n)):
        t0 = time.perf_counter()
        sampler.sample(prep.model_data, parse(f"halfnormal({scale:.3f})"), p["effect"], p["baseline"], draws=draws,
                       chains=4, seed=2 + i, guard=False)
        times.append(time.perf_counter() - t0)
    assert sampler.compiles == 1
    return cfg.outcome, float(np.median(times)), float(np.max(times))


def grid_config_cost(n=10):
    """Whole sensitivity configurations (fit + summaries + psense + tau density) on one warm structure."""
    from rescuemeta import sensitivity as sens

    cfg = {"outcome": "mortality", "model": "contrast", "measure": "OR", "effect_prior": "normal(0, 4)",
           "baseline_prior": "normal(0, 10)", "inclusion": "dedup", "draws": 1000, "tune": 1000, "chains": 4,
           "seed": 1, "thresholds": [1.0, 0.8]}
    data = str(ROOT / "data" / "studies.csv")
    t0 = time.perf_counter()
    sens.run_one({**cfg, "tau_prior": "halfnormal(0.5)"}, data)
    cold = time.perf_counter() - t0
    times = []
    for scale in np.linspace(0.2, 1.5, n):
        t0 = time.perf_counter()
        sens.run_one({**cfg, "tau_prior": f"halfnormal({scale:.3f})"}, data)
        times.append(time.perf_counter() - t0)
    return cold, float(np.median(times)), float(np.max(times))


def versions():
    import nutpie
    import pymc
    import pytensor

    return (f"Python {platform.python_version()}, PyMC {pymc.__version__}, PyTensor {pytensor.__version__}, "
            f"nutpie {nutpie.__version__}, ArviZ {az.__version__}, NumPy {np.__version__}")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def write_block(path: Path, name: str, block: str, heading: str) -> None:
    """Replace the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path`` (or append it under
    ``heading``), atomically."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    new = f"{begin}\n{block}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: new, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + new + "\n"
    tmp = path.with_suffix(".md.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--fits-only", choices=["rescuemeta", "pm.sample"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fits_only:
        return fits_only(args.fits_only, args.draws)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pymc").setLevel(logging.ERROR)
    items = configs(args.draws)
    ours, ours_total, info = run_rescuemeta(items, args.draws)
    plain, plain_total = run_pm_sample(items, args.draws)
    cold_ours, cold_plain = cold_run("rescuemeta", args.draws), cold_run("pm.sample", args.draws)
    outcome, marg_med, marg_max = marginal_prior_cost(items, args.draws)
    g_cold, g_med, g_max = grid_config_cost()

    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.", "", versions() + ".", "",
             f"All {len(items)} fits of `models/primary.toml` (every outcome: contrast where control arms exist, "
             f"proportion on stent arms), 4 chains x {args.draws} draws after 1000 tuning steps, run one after "
             "the other in one process; wall time includes model compilation. Both tools' compile caches are "
             "warm here (PyTensor's C cache for pm.sample, the numba cache for rescuemeta, both on disk from "
             "earlier runs); the cold case is below the table.", "",
             "| fit | rescuemeta wall s | ESS/s mu | ESS/s tau | pm.sample wall s | ESS/s mu | ESS/s tau | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a, b in zip(ours, plain):
        lines.append(f"| {a['fit']} | {a['wall']:.2f} | {a['ess_mu'] / a['wall']:.0f} | {a['ess_tau'] / a['wall']:.0f} | "
                     f"{b['wall']:.2f} | {b['ess_mu'] / b['wall']:.0f} | {b['ess_tau'] / b['wall']:.0f} | "
                     f"{b['wall'] / a['wall']:.1f}x |")
    ess_ours = sum(r["ess_tau"] for r in ours) / ours_total
    ess_plain = sum(r["ess_tau"] for r in plain) / plain_total
    lines += [f"| **all fits** | **{ours_total:.1f}** | | {ess_ours:.0f} | **{plain_total:.1f}** | | {ess_plain:.0f} | "
              f"**{plain_total / ours_total:.1f}x** |", "",
              f"- Cold caches (each tool in a new process with empty PyTensor and numba compile directories, so "
              f"nothing compiled earlier is reused): rescuemeta {cold_ours['total']:.1f} s (compiling "
              f"{cold_ours['compile_s']:.1f} s), pm.sample {cold_plain['total']:.1f} s: "
              f"**{cold_plain['total'] / cold_ours['total']:.1f}x**.",
              f"- rescuemeta compiled {info['compiles']} model(s) for the {len(items)} fits (contrast and proportion "
              "share one model, the hand-written binomial log density of `rescuemeta.native`, for 16 padded "
              f"studies; observations and prior values are data) in {info['compile_s']:.1f} s, loading the numba "
              f"code from disk; sampling itself took {sum(r['sampling'] for r in ours):.1f} s of the "
              f"{ours_total:.1f} s.",
              f"- Divergences: rescuemeta {sum(r['div'] for r in ours)} (target_accept 0.95; fits needing the "
              f"guard's retry: {sum(r['attempts'] > 1 for r in ours)}), plain pm.sample (target_accept 0.8) "
              f"{sum(r['div'] for r in plain)}.",
              f"- ESS/s for tau over all fits (sum of min bulk ESS / total wall time): rescuemeta {ess_ours:.0f}, "
              f"pm.sample {ess_plain:.0f} ({ess_ours / ess_plain:.1f}x).",
              f"- Marginal cost of one more prior configuration ({outcome} contrast model, new half-normal scale, "
              f"warm compile cache, 4 x {args.draws} draws): median {marg_med:.2f} s, max {marg_max:.2f} s.",
              f"- One sensitivity-grid configuration (mortality contrast model; fit + summaries + probabilities + "
              f"psense + tau density, `rescuemeta.sensitivity.run_one`): cold (compiling) {g_cold:.1f} s; each further "
              f"prior on the same structure median {g_med:.2f} s, max {g_max:.2f} s.",
              "- Both tools cache compiled code on disk between processes: pm.sample through PyTensor's C cache, "
              "rescuemeta through numba's cache (the native callbacks beside the package's source or in "
              "`NUMBA_CACHE_DIR`; the PyTensor graphs of the other model kinds, with their nutpie callbacks, in "
              "PyTensor's numba directory, `rescuemeta.compiled`)."]
    block = "\n".join(lines)
    print(block)
    write_block(Path(args.out), "bench_fit", block, "## Fitting every outcome (issue 3)\n\n`bench/bench_fit.py`")


if __name__ == "__main__":
    main()
