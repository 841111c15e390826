"""Benchmark (issue 19): `rescuemeta analyze` on the primary spec from a cold start (a new process, an empty
PyTensor compile directory and an empty fit cache: a fresh machine), then re-run unchanged, then with a changed
tau prior (same compile and fit caches), in one run.

    .venv/bin/python bench/bench_analyze.py [--out BENCHMARKS.md]

Writes the table into BENCHMARKS.md between ``<!-- bench_analyze:begin -->`` and ``<!-- bench_analyze:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("rescuemeta"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={t / 'compile'}", "RESCUEMETA_CACHE": str(t / "cache")}
        spec = t / "primary.toml"
        spec.write_text((ROOT / "models" / "primary.toml").read_text())

        def run(name, **extra_env):
            t0 = time.perf_counter()
            r = subprocess.run([EXE, "analyze", "--spec", str(spec), "--data", str(ROOT / "data" / "studies.csv"),
                                "--abstract", str(ROOT / "data" / "abstract_estimates.csv"), "--out", str(t / "report")],
                               env={**env, **extra_env}, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if r.returncode not in (0, 3):
                raise SystemExit(r.stderr)
            stamp = json.loads((t / "report" / ".inputs.json").read_text()) if (t / "report" / ".inputs.json").exists() else {}
            res = stamp.get("result", {})
            rows.append((name, secs, r.returncode, res.get("grid_computed"), res.get("grid_cached"),
                         res.get("figures")))

        run("cold: new process, empty compile directory and fit cache")
        run("unchanged re-run (report up to date)")
        text = spec.read_text()
        old = 'tau_prior = { contrast = "halfnormal(0.5)"'
        if old not in text:
            raise SystemExit("models/primary.toml's tau_prior line changed: update bench_analyze.py")
        spec.write_text(text.replace(old, 'tau_prior = { contrast = "halfnormal(0.6)"'))
        run("re-run with the contrast tau prior changed, 0.5 -> 0.6 (compile and fit caches warm)")
        # side by side: the same kind of change without session 11's graph cache and background figures, then with
        spec.write_text(text.replace(old, 'tau_prior = { contrast = "halfnormal(0.7)"'))
        run("changed again, 0.6 -> 0.7, as session 10 ran it (RESCUEMETA_GRAPH_CACHE=0, RESCUEMETA_FIGURE_WORKERS=0)",
            RESCUEMETA_GRAPH_CACHE="0", RESCUEMETA_FIGURE_WORKERS="0")
        spec.write_text(text.replace(old, 'tau_prior = { contrast = "halfnormal(0.8)"'))
        run("changed again, 0.7 -> 0.8 (defaults: graph cache, figures rendered in the background)")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {when} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
             "`rescuemeta analyze --spec models/primary.toml --abstract data/abstract_estimates.csv`, each a new "
             "process.", "", "| run | wall s | exit | grid rows computed | grid rows cached | figures |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, secs, rc, comp, cached, nfig in rows:
        lines.append(f"| {name} | {secs:.1f} | {rc} | {comp} | {cached} | {nfig} |")
    text = "\n".join(lines)
    print(text)
    path = Path(args.out)
    doc = path.read_text()
    block = f"<!-- bench_analyze:begin -->\n{text}\n<!-- bench_analyze:end -->"
    if "<!-- bench_analyze:begin -->" in doc:
        doc = re.sub(r"<!-- bench_analyze:begin -->.*?<!-- bench_analyze:end -->", lambda m: block, doc, flags=re.S)
    else:
        doc += "\n## The main job from a cold start (issue 19)\n\n`bench/bench_analyze.py`\n\n" + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    main()
