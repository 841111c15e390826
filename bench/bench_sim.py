"""Benchmark (issue 19): a simulation study of 10,000 simulated meta-analyses on a Dask cluster of separate
processes (`dask scheduler`, `dask worker` started in another directory), through `rescuemeta sensitivity
--scheduler`, interrupted and resumed; with the throughput per worker, measured side by side in one run against
the same configurations in one local process.

    .venv/bin/python bench/bench_sim.py [--replications 5000] [--workers 2] [--out BENCHMARKS.md]

The study: ``models/simulation.toml``'s truth (k = 5 studies of 80 per arm, control risk 0.4, log OR -0.5,
tau 0.3) analysed by the exact normal-normal model (escalc log ORs; quadrature, no sampling) under two tau priors:
``--replications`` x 2 meta-analyses. Then a small study of the sampled binomial model (NUTS) on the same
cluster, for the per-worker throughput of sampled fits. Writes the table into BENCHMARKS.md between
``<!-- bench_sim:begin -->`` and ``<!-- bench_sim:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("rescuemeta"))
DASK = str(Path(sys.executable).with_name("dask"))

SPEC = """tau_priors = ["halfnormal(0.5)", "halfcauchy(0.5)"]
effect_priors = ["normal(0, 4)"]
draws = {draws}
chains = 2
seed = 11
[simulation]
model = "{model}"
k = 5
n_per_arm = 80
baseline_risk = 0.4
mu = -0.5
tau = 0.3
replications = {reps}
"""


def _cluster(tmp: Path, workers: int):
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    sched = tmp / "scheduler.json"
    procs = [subprocess.Popen([DASK, "scheduler", "--scheduler-file", str(sched), "--port", "0", "--no-dashboard"],
                              cwd=elsewhere, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    while not sched.exists():
        time.sleep(0.1)
    procs.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(sched), "--nworkers", str(workers),
                                   "--nthreads", "1", "--no-dashboard"], cwd=elsewhere, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    from distributed import Client

    time.sleep(0.5)
    with Client(scheduler_file=str(sched), timeout=60) as c:
        c.wait_for_workers(workers, timeout=180)
        return procs, c.scheduler.address


def _run(spec: Path, out: Path, address: str | None, kill_after: float | None = None) -> tuple[float, dict | None]:
    cmd = [EXE, "sensitivity", "--spec", str(spec), "--out", str(out), "--json"]
    cmd += ["--scheduler", address] if address else ["--workers", "1"]
    t0 = time.perf_counter()
    if kill_after is not None:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        p.send_signal(signal.SIGKILL)
        p.wait()
        return time.perf_counter() - t0, None
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return time.perf_counter() - t0, json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replications", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    n = 2 * args.replications
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = tmp / "sim.toml"
        spec.write_text(SPEC.format(model="normal", reps=args.replications, draws=500))
        local_spec = tmp / "local.toml"  # the same truth, 500 replications, in one local process
        local_spec.write_text(SPEC.format(model="normal", reps=500, draws=500))
        nuts_spec = tmp / "nuts.toml"
        nuts_spec.write_text(SPEC.format(model="contrast", reps=40, draws=500))
        local_s, local = _run(local_spec, tmp / "local", None)
        nuts_local_s, nuts_local = _run(nuts_spec, tmp / "nuts_local", None)
        procs, address = _cluster(tmp, args.workers)
        try:
            killed_s, _ = _run(spec, tmp / "out", address, kill_after=40.0)
            cached_after_kill = len(list((tmp / "out" / "cache").glob("*.json")))
            resume_s, res = _run(spec, tmp / "out", address)
            assert res is not None
            nuts_s, nuts = _run(nuts_spec, tmp / "nuts", address)
            assert nuts is not None
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
    assert res["computed"] + res["cached"] == n and all(r["status"] == "ok" for r in res["rows"])
    total = killed_s + resume_s
    per_worker = n / total / args.workers
    local_rate = 1000 / local_s
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summ = {s["tau_prior"]: s for s in res["summary"]}
    lines = [f"Run {when} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; a Dask "
             f"scheduler and {args.workers} worker processes (`dask worker --nworkers {args.workers} --nthreads 1`), "
             "started in another directory; `rescuemeta sensitivity --scheduler` sends the simulated meta-analyses in "
             "chunks of 100 (`runner.CHUNK`), and this process caches each row as its chunk returns.", "",
             f"Study: {n:,} simulated meta-analyses ({args.replications:,} data sets x 2 tau priors; k = 5, 80 per arm, "
             "log OR -0.5, tau 0.3), exact normal-normal posterior (quadrature) of the escalc log ORs.", "",
             "| run | wall s | meta-analyses computed | from the cache | per worker per s |", "|---|---:|---:|---:|---:|",
             f"| cluster, killed (SIGKILL) after {killed_s:.0f} s | {killed_s:.1f} | {cached_after_kill:,} | 0 | "
             f"{cached_after_kill / killed_s / args.workers:.1f} |",
             f"| cluster, resumed to the end | {resume_s:.1f} | {res['computed']:,} | {res['cached']:,} | "
             f"{res['computed'] / resume_s / args.workers:.1f} |",
             f"| cluster, whole study (both runs) | {total:.1f} | {n:,} | | {per_worker:.1f} |",
             f"| one local process, 1,000 of the same meta-analyses | {local_s:.1f} | 1,000 | 0 | {local_rate:.1f} |",
             f"| cluster, sampled binomial model (NUTS, 2 chains x 500), 80 fits | {nuts_s:.1f} | {nuts['computed']} | "
             f"0 | {nuts['computed'] / nuts_s / args.workers:.2f} |",
             f"| one local process, the same 80 NUTS fits | {nuts_local_s:.1f} | {nuts_local['computed']} | 0 | "
             f"{nuts_local['computed'] / nuts_local_s:.2f} |", "",
             f"- Each cluster worker ran {per_worker:.1f} meta-analyses per second over the whole study against "
             f"{local_rate:.1f} in one local process ({per_worker / local_rate:.0%}; the cluster run includes "
             "start-up, the kill and the client's writing of every row to the cache).",
             "- Results (coverage of the 95% intervals, with binomial MCSE): " + "; ".join(
                 f"{tp}: mu {s['coverage_mu']:.3f} ({s['coverage_mu_mcse']:.3f}), tau {s['coverage_tau']:.3f} "
                 f"({s['coverage_tau_mcse']:.3f})" for tp, s in summ.items()) + "."]
    text = "\n".join(lines)
    print(text)
    path = Path(args.out)
    doc = path.read_text()
    block = f"<!-- bench_sim:begin -->\n{text}\n<!-- bench_sim:end -->"
    if "<!-- bench_sim:begin -->" in doc:
        doc = re.sub(r"<!-- bench_sim:begin -->.*?<!-- bench_sim:end -->", lambda m: block, doc, flags=re.S)
    else:
        doc += ("\n## A simulation study across a Dask cluster (issue 19)\n\n`bench/bench_sim.py`\n\n" + block + "\n")
    path.write_text(doc)


if __name__ == "__main__":
    main()
