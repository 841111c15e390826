"""Benchmark (issue 19): a prior grid of 50 half-normal scales (0.10 to 2.06) on one outcome, by importance
reweighting of earlier fits (the default) against a refit per configuration, measured side by side in one run,
in one process with a warm compile cache (one warm-up fit first), through the grid runner `rescuemeta
sensitivity` uses (no cache, no figures). Also the accuracy of the reweighted rows against their refits.

    .venv/bin/python bench/bench_grid.py [--outcome mortality] [--model contrast] [--out BENCHMARKS.md]

Writes the table into BENCHMARKS.md between ``<!-- bench_grid:begin -->`` and ``<!-- bench_grid:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


FAMILIES = ["halfnormal(0.5)", "halfcauchy(0.5)", "halft(3, 0.5)", "exponential(2)", "lognormal(-1.5, 0.8)",
            "invgamma(1, 0.1)", "turner(matched)", "uniform(0, 2)"]


def _families(outcome: str) -> dict:
    """CLI wall time of a grid over one tau prior and over 8 families (7 share one compiled graph; uniform has
    its own), with and without reweighting, each in a new process."""
    import subprocess
    import sys
    import tempfile

    exe = str(Path(sys.executable).with_name("rescuemeta"))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name, priors, reweight=True):
            spec = Path(tmp) / "s.toml"
            prop = [p for p in priors if not p.startswith("turner")]
            spec.write_text(f'outcomes = ["{outcome}"]\nmodels = ["contrast", "proportion"]\ninclusion = ["dedup"]\n'
                            f"reweight = {str(reweight).lower()}\n[tau_priors]\ncontrast = {priors!r}\n"
                            f"proportion = {prop!r}\n".replace("'", '"'))
            t0 = time.perf_counter()
            subprocess.run([exe, "sensitivity", "--data", str(ROOT / "data" / "studies.csv"), "--spec", str(spec),
                            "--out", str(Path(tmp) / name.replace(" ", "_")), "--workers", "1", "--no-plots"],
                           check=True, capture_output=True)
            return time.perf_counter() - t0

        run("warm-up", FAMILIES)  # fills the on-disk compile cache for every graph
        out["one prior (halfnormal(0.5))"] = run("one", ["halfnormal(0.5)"])
        out["8 families (7 in one graph; reweighting)"] = run("eight", FAMILIES)
        out["8 families, reweight = false"] = run("eight-refit", FAMILIES, reweight=False)
    return out


QUANTITIES = ("mu_median", "tau_median", "p_or_lt_1", "p_or_lt_0.8")


def _calibration(base: dict, data: str, seeds: int, targets: tuple[str, ...], reference: str) -> dict:
    """Are the stated Monte Carlo SEs honest? For each of ``seeds`` independent seeds: a reference fit under
    ``reference``, each target prior reweighted from it, and a refit under the target with the same seed; each
    against a long fit under the target (10x the draws, another seed) taken as the truth. Independent replications,
    unlike the 47 rows of one grid (which share three references and one seed), so z = (estimate - truth) /
    sqrt(MCSE^2 + MCSE_truth^2) should be about N(0, 1): mean z^2 about 1 and about 95% within 2."""
    from rescuemeta import sensitivity as sens

    out: dict = {"reweighted": {q: [] for q in QUANTITIES}, "refit": {q: [] for q in QUANTITIES}, "refused": 0}
    truth = {t: sens.run_one({**base, "tau_prior": t, "draws": 10 * base["draws"], "seed": 999}, data, reweight=False)
             for t in targets}
    for i in range(seeds):
        sens._REFERENCES.clear()
        sens.run_one({**base, "tau_prior": reference, "seed": 100 + i}, data)
        for t in targets:
            rw = sens.run_one({**base, "tau_prior": t, "seed": 100 + i}, data)
            rf = sens.run_one({**base, "tau_prior": t, "seed": 100 + i}, data, reweight=False)
            if rw["reweighted_from"] is None:
                out["refused"] += 1
                continue
            for how, row in (("reweighted", rw), ("refit", rf)):
                for q in QUANTITIES:
                    se = math.hypot(row[q + "_mcse"], truth[t][q + "_mcse"])
                    out[how][q].append((row[q] - truth[t][q]) / se if se > 0 else 0.0)
    sens._REFERENCES.clear()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outcome", default="mortality")
    ap.add_argument("--model", default="contrast")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--seeds", type=int, default=20, help="independent replications of the calibration check")
    args = ap.parse_args()
    from rescuemeta import sensitivity as sens

    data = str(ROOT / "data" / "studies.csv")
    scales = [round(float(x), 2) for x in np.linspace(0.10, 2.06, 50)]
    cfgs = [{"outcome": args.outcome, "model": args.model, "measure": "OR", "tau_prior": f"halfnormal({s:g})",
             "effect_prior": "normal(0, 4)", "baseline_prior": "normal(0, 10)", "inclusion": "dedup", "draws": 1000,
             "tune": 1000, "chains": 4, "seed": 20261127, "thresholds": [1.0, 0.8]} for s in scales]
    sens.run_one({**cfgs[0], "tau_prior": "halfnormal(0.5)"}, data, reweight=False)  # compile once (warm-up)
    times = {}
    t0 = time.perf_counter()
    rw = sens.run_group(cfgs, data, None, "")
    times["reweighted"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    refit = sens.run_group([{**c, "reweight": False} for c in cfgs], data, None, "")
    times["refit"] = time.perf_counter() - t0
    n_rw = sum(r["reweighted_from"] is not None for r in rw)
    # accuracy of reweighted rows: differences in units of their combined Monte Carlo SE
    z: dict[str, list[float]] = {q: [] for q in QUANTITIES}
    for a, b in zip(rw, refit):
        if a["reweighted_from"] is None:
            continue
        for q in z:
            se = math.hypot(a[q + "_mcse"], b[q + "_mcse"])
            z[q].append(abs(a[q] - b[q]) / se if se > 0 else 0.0)
    targets = ("halfnormal(0.35)", "halfnormal(0.8)", "exponential(2)")
    cal = _calibration({**cfgs[0]}, data, args.seeds, targets, "halfnormal(0.5)")
    fam = _families(args.outcome)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {when} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.", "",
             f"{args.outcome} / {args.model}, 50 tau priors half-normal(0.10) to half-normal(2.06), 4 chains x 1000 "
             "draws, one process, warm compile cache, `sensitivity.run_group` (fit, summaries, probabilities, psense, "
             "tau density per row; no cache, no figures).", "",
             "| grid | wall s | per configuration s | fits | reweighted rows |", "|---|---:|---:|---:|---:|",
             f"| reweighting (default) | {times['reweighted']:.1f} | {times['reweighted'] / 50:.2f} | {50 - n_rw} | "
             f"{n_rw} |",
             f"| a refit per configuration | {times['refit']:.1f} | {times['refit'] / 50:.2f} | 50 | 0 |", "",
             f"- Speed-up: **{times['refit'] / times['reweighted']:.1f}x**.",
             "- Reweighted rows against their refits, |difference| / combined Monte Carlo SE (the rows' own "
             "`*_mcse` columns: ArviZ's quantile and mean MCSEs for a fit; for a reweighted row the same from the "
             "reweighting's ESS, the reference's times the weights' relative efficiency, and for a probability its "
             "own importance-sampling ESS; each >= 400 or the row is refitted): "
             + "; ".join(f"{k}: median {np.median(v):.2f}, max {max(v):.2f}, share within 2 SE "
                         f"{np.mean(np.array(v) <= 2):.0%}" for k, v in z.items() if v) + ".",
             "", f"Calibration of the stated Monte Carlo SEs over {args.seeds} independent seeds: a reference fit "
             f"under halfnormal(0.5) reweighted to {', '.join(targets)} ({cal['refused']} of "
             f"{args.seeds * len(targets)} refused and refitted), and a refit with the same seed, each against a "
             "fit with 10x the draws under the target; z = (estimate - long fit) / combined MCSE (the rows' "
             "`*_mcse`). Honest SEs give mean z^2 about 1 and about 95% of |z| <= 2.", "",
             "| quantity | reweighted: mean z^2 | reweighted: share \\|z\\| <= 2 | refit: mean z^2 | "
             "refit: share \\|z\\| <= 2 |", "|---|---:|---:|---:|---:|",
             *[f"| {q} | {np.mean(np.square(cal['reweighted'][q])):.2f} | {np.mean(np.abs(cal['reweighted'][q]) <= 2):.0%} | "
               f"{np.mean(np.square(cal['refit'][q])):.2f} | {np.mean(np.abs(cal['refit'][q]) <= 2):.0%} |"
               for q in QUANTITIES if cal["reweighted"][q]],
             "", "Through the CLI, each a new process (`rescuemeta sensitivity --workers 1 --no-plots`, "
             f"{args.outcome}, contrast and proportion models, the compile cache on disk warm from a first run):", "",
             "| grid | wall s | ratio to one prior |", "|---|---:|---:|"]
    for name, secs in fam.items():
        lines.append(f"| {name} | {secs:.1f} | {secs / fam['one prior (halfnormal(0.5))']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    path = Path(args.out)
    doc = path.read_text()
    block = f"<!-- bench_grid:begin -->\n{text}\n<!-- bench_grid:end -->"
    if "<!-- bench_grid:begin -->" in doc:
        doc = re.sub(r"<!-- bench_grid:begin -->.*?<!-- bench_grid:end -->", lambda m: block, doc, flags=re.S)
    else:
        doc += ("\n## Prior grids by importance reweighting (issue 19)\n\n`bench/bench_grid.py`\n\n" + block + "\n")
    path.write_text(doc)


if __name__ == "__main__":
    main()
