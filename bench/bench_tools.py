"""Benchmark against the tools users would pick instead, side by side in one run on one machine:

(a) the primary analysis with rescuemeta (nutpie, one compiled padded graph, convergence guard),
(b) the same models with plain ``pm.sample`` (PyMC's default NUTS),
(c) the same models with NumPyro's NUTS through PyMC (``pm.sample(nuts_sampler="numpyro")``), if jax and numpyro
    are installed,
(d) brms/Stan (``bench/brms_fit.R``), if R with brms is installed (Debian ``r-cran-brms``),

wall time including compilation, ESS per second for mu and tau, the marginal cost of one more prior, and the
floor: the time of the gradient evaluations themselves (leapfrog steps x cost of one logp+gradient call).

    .venv/bin/python bench/bench_tools.py [--draws 1000] [--out BENCHMARKS.md]

jax, numpyro and brms are benchmark-only: they are not in requirements.lock.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from bench_fit import configs, ess_min, machine, versions, write_block  # noqa: E402

from rescuemeta.models import build_model  # noqa: E402
from rescuemeta.sampling import Sampler  # noqa: E402


def run_ours(items, draws, sampler):
    rows, t_all = [], time.perf_counter()
    for cfg, prep in items:
        p = cfg.priors()
        t0 = time.perf_counter()
        idata, diag = sampler.sample(prep.model_data, p["tau"], p["effect"],
                                     p["baseline"] if cfg.model == "contrast" else None, draws=draws, chains=4,
                                     seed=cfg.seed)
        steps = float(idata.sample_stats["n_steps"].sum()) * (1000 + draws) / draws  # warmup at the same rate
        rows.append({"fit": f"{cfg.outcome}/{cfg.model}", "wall": time.perf_counter() - t0,
                     "sampling": idata.attrs["sampling_seconds"], "ess_mu": ess_min(idata, "mu"),
                     "ess_tau": ess_min(idata, "tau"), "div": diag.divergences, "steps": steps})
    return rows, time.perf_counter() - t_all


def run_pymc(items, draws, nuts_sampler):
    import pymc as pm

    rows, t_all = [], time.perf_counter()
    for cfg, prep in items:
        p = cfg.priors()
        t0 = time.perf_counter()
        model = build_model(prep.model_data, p["tau"], p["effect"], p["baseline"] if cfg.model == "contrast" else None)
        kw = {"nuts_sampler": nuts_sampler}
        if nuts_sampler == "numpyro":
            kw["nuts_sampler_kwargs"] = {"chain_method": "parallel"}
        with model:
            idata = pm.sample(draws=draws, tune=1000, chains=4, cores=2, random_seed=cfg.seed, progressbar=False,
                              compute_convergence_checks=False, **kw)
        rows.append({"fit": f"{cfg.outcome}/{cfg.model}", "wall": time.perf_counter() - t0,
                     "ess_mu": ess_min(idata, "mu"), "ess_tau": ess_min(idata, "tau"),
                     "div": int(idata.sample_stats["diverging"].sum())})
    return rows, time.perf_counter() - t_all


def run_brms(items, draws):
    if shutil.which("Rscript") is None:
        return None, "Rscript not installed"
    ok = subprocess.run(["Rscript", "-e", "suppressMessages(library(brms))"], capture_output=True)
    if ok.returncode != 0:
        return None, "R package brms not installed"
    tmp = Path(tempfile.mkdtemp())
    order = []
    for i, (cfg, prep) in enumerate(items):
        a = prep.model_data.arrays
        name = f"{i:02d}_{cfg.outcome}_{cfg.model}"
        order.append((f"{cfg.outcome}/{cfg.model}", name))
        with open(tmp / f"{name}.csv", "w") as f:
            f.write("study,treat,events,n\n")
            for j in range(prep.model_data.k):
                f.write(f"s{j},1,{int(a['ai'][j])},{int(a['n1i'][j])}\n")
                if cfg.model == "contrast":
                    f.write(f"s{j},0,{int(a['ci'][j])},{int(a['n2i'][j])}\n")
    out = tmp / "brms.json"
    t0 = time.perf_counter()
    r = subprocess.run(["Rscript", str(ROOT / "bench" / "brms_fit.R"), str(tmp), str(out), str(draws)],
                       capture_output=True, text=True)
    total = time.perf_counter() - t0
    if r.returncode != 0:
        return None, "brms failed: " + " ".join(r.stderr.split())[-200:]
    res = json.loads(out.read_text())
    rows = [{"fit": fit, "wall": res[name]["wall"], "ess_mu": res[name]["ess_mu"], "ess_tau": res[name]["ess_tau"],
             "div": res[name]["divergences"]} if "error" not in res[name] else
            {"fit": fit, "error": res[name]["error"]} for fit, name in order]
    return (rows, total, res["versions"]), None


def gradient_cost(items, sampler):
    """Seconds per logp+gradient evaluation of the compiled (padded) model nutpie evaluates: its C callback, called
    directly 20,000 times from Python through ctypes (an upper bound on the pure gradient cost: it includes the
    ctypes call, about 1 us)."""
    import ctypes

    out = []
    dbl = ctypes.POINTER(ctypes.c_double)
    for cfg, prep in items:
        p = cfg.priors()
        c = sampler._compiled(prep.model_data, p["tau"], p["effect"], p["baseline"] if cfg.model == "contrast" else None)
        x, grad, logp = np.zeros(c.n_dim), np.zeros(c.n_dim), np.zeros(())
        args = (c.n_dim, x.ctypes.data_as(dbl), grad.ctypes.data_as(dbl), logp.ctypes.data_as(dbl),
                c.user_data.ctypes.data_as(ctypes.c_void_p))
        fn = c.compiled_logp_func.ctypes
        for _ in range(500):
            fn(*args)
        n = 20000
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*args)
        out.append((time.perf_counter() - t0) / n)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pymc").setLevel(logging.ERROR)
    items = configs(args.draws)
    sampler = Sampler()
    ours, ours_total = run_ours(items, args.draws, sampler)
    plain, plain_total = run_pymc(items, args.draws, "pymc")
    try:
        import numpyro  # noqa: F401

        npy, npy_total = run_pymc(items, args.draws, "numpyro")
    except ImportError:
        npy, npy_total = None, None
    brms, brms_note = run_brms(items, args.draws)
    grad = gradient_cost(items, sampler)

    def tot(rows, total, key):
        return sum(r[key] for r in rows) / total

    tools = [("rescuemeta (nutpie)", ours, ours_total), ("pm.sample (PyMC NUTS)", plain, plain_total)]
    if npy is not None:
        tools.append(("pm.sample, NumPyro NUTS", npy, npy_total))
    if brms is not None:
        tools.append(("brms / Stan", brms[0], brms[1]))
    skipped = []
    if brms is not None:
        ok_fits = {r["fit"] for r in brms[0] if "error" not in r}
        skipped = [r for r in brms[0] if "error" in r]
        brms_rows = [r for r in brms[0] if "error" not in r]
        ours_subset = sum(r["wall"] for r in ours if r["fit"] in ok_fits)
        tools[-1] = ("brms / Stan", brms_rows, brms[1])
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.", "",
             versions() + (f"; jax/numpyro {__import__('jax').__version__}/{__import__('numpyro').__version__}"
                           if npy is not None else "")
             + (f"; brms {brms[2]['brms']}, rstan {brms[2]['rstan']}, {brms[2]['R']}" if brms else "") + ".", "",
             f"The {len(items)} fits of `models/primary.toml`, 4 chains x {args.draws} draws after 1000 tuning steps, "
             "same priors, each tool run over all fits in turn; wall time includes compilation (brms: each Stan "
             "program compiled once, later fits via `update(newdata=)`; brms's total is the Rscript run, R start-up "
             "included). Debian's r-cran-bh has no headers directory, which rstan needs: "
             "`ln -s /usr/include /usr/lib/R/site-library/BH/include` made brms work here.", "",
             "| tool | total wall s | ratio to rescuemeta | ESS/s mu | ESS/s tau | divergences |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, rows, total in tools:
        if name.startswith("brms"):
            lines.append(f"| {name} ({len(rows)} fits) | {total:.1f} | {total / ours_subset:.1f}x (vs rescuemeta's "
                         f"{ours_subset:.1f} s on the same fits) | {tot(rows, total, 'ess_mu'):.0f} | "
                         f"{tot(rows, total, 'ess_tau'):.0f} | {sum(r['div'] for r in rows)} |")
            continue
        lines.append(f"| {name} | {total:.1f} | {total / ours_total:.1f}x | {tot(rows, total, 'ess_mu'):.0f} | "
                     f"{tot(rows, total, 'ess_tau'):.0f} | {sum(r['div'] for r in rows)} |")
    if brms is None:
        lines.append(f"| brms / Stan | not run: {brms_note} | | | | |")
    if npy is None:
        lines.append("| pm.sample, NumPyro NUTS | not run: jax/numpyro not installed | | | | |")
    floor_rows = []
    for r, g in zip(ours, grad):
        floor = r["steps"] * g / 2  # 4 chains on 2 cores
        floor_rows.append((r["fit"], g, r["steps"], floor, r["sampling"]))
    floor_total = sum(f[3] for f in floor_rows)
    samp_total = sum(f[4] for f in floor_rows)
    lines += ["", "Per-fit wall seconds:", "", "| fit | " + " | ".join(n for n, _, _ in tools) + " |",
              "|---|" + "---:|" * len(tools)]
    for cfg, _ in items:
        fit = f"{cfg.outcome}/{cfg.model}"
        cells = []
        for _, rows, _ in tools:
            r = next((x for x in rows if x["fit"] == fit), None)
            cells.append(f"{r['wall']:.2f}" if r is not None else "—")
        lines.append(f"| {fit} | " + " | ".join(cells) + " |")
    for r in skipped:
        lines.append(f"\nbrms: {r['fit']} not run ({r['error']}).")
    lines += ["", "**Floor.** One logp+gradient evaluation of these models costs "
              f"{min(grad) * 1e6:.1f}-{max(grad) * 1e6:.1f} µs (the numba function nutpie runs, called directly "
              "20,000 times: an upper bound, Python dispatch included). rescuemeta's fits took "
              f"{sum(f[2] for f in floor_rows) / 1e6:.2f} million leapfrog steps in all (warm-up included), so the "
              f"gradient work alone is about {floor_total:.2f} s on 2 cores; its sampling took {samp_total:.2f} s "
              f"({samp_total / floor_total:.1f}x the floor) and its total wall time {ours_total:.1f} s, the rest being "
              "the one-time model compilation."]
    block = "\n".join(lines)
    print(block)
    write_block(Path(args.out), "bench_tools", block, "## Against the tools users would pick instead (issue 7)\n\n"
                "`bench/bench_tools.py` (+ `bench/brms_fit.R`)")


if __name__ == "__main__":
    main()
