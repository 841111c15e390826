"""Benchmark (issue 19): `rescuemeta analyze` on the primary spec from a cold start (a new process, empty PyTensor
and numba compile directories and an empty fit cache: a fresh machine), then re-run unchanged, then with a changed
tau prior (same compile and fit caches), in one run; the cold start and the changed prior also with the PyTensor
binomial graph (``RESCUEMETA_NATIVE=0``) and, with ``--baseline REV``, with the package's source at an earlier
commit (a temporary git worktree on ``PYTHONPATH``), each on a machine of its own, interleaved.

    .venv/bin/python bench/bench_analyze.py [--out BENCHMARKS.md] [--baseline eae9c99]

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
    ap.add_argument("--baseline", default=None, help="a git revision whose source runs beside the current one")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        base_rev = None
        if args.baseline:
            base_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                      capture_output=True, text=True, check=True).stdout.strip()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(t / "baseline_src"), base_rev],
                           capture_output=True, check=True)
        old = 'tau_prior = { contrast = "halfnormal(0.5)"'
        text = (ROOT / "models" / "primary.toml").read_text()
        if old not in text:
            raise SystemExit("models/primary.toml's tau_prior line changed: update bench_analyze.py")

        def setup(name, **extra_env):
            """A machine of its own: compile directories (PyTensor's and numba's), fit cache, spec and report."""
            d = t / name
            d.mkdir()
            (d / "primary.toml").write_text(text)
            return d, {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={d / 'compile'}",
                       "NUMBA_CACHE_DIR": str(d / "numba"), "RESCUEMETA_CACHE": str(d / "cache"), **extra_env}

        def run(name, where, tau=None):
            d, env = where
            if tau is not None:
                (d / "primary.toml").write_text(text.replace(old, f'tau_prior = {{ contrast = "halfnormal({tau})"'))
            t0 = time.perf_counter()
            r = subprocess.run([EXE, "analyze", "--spec", str(d / "primary.toml"), "--data",
                                str(ROOT / "data" / "studies.csv"), "--abstract",
                                str(ROOT / "data" / "abstract_estimates.csv"), "--out", str(d / "report")],
                               env=env, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if r.returncode not in (0, 3):
                raise SystemExit(r.stderr)
            stamp_file = d / "report" / ".inputs.json"
            res = json.loads(stamp_file.read_text()).get("result", {}) if stamp_file.exists() else {}
            rows.append((name, secs, r.returncode, res.get("grid_computed"), res.get("grid_cached"),
                         res.get("figures")))

        # side by side: the binomial models' hand-written log density (rescuemeta.native, the default) and the
        # PyTensor graph it replaced (RESCUEMETA_NATIVE=0, as session 12 ran), and the source at --baseline, each
        # on a machine of its own
        new, pt = setup("native"), setup("pytensor", RESCUEMETA_NATIVE="0")
        base = setup("baseline", PYTHONPATH=str(t / "baseline_src" / "src")) if base_rev else None
        run("cold: new process, empty compile directories and fit cache", new)
        if base:
            run(f"cold, the source at {base_rev}", base)
        run("cold, as session 12 ran it (RESCUEMETA_NATIVE=0: the PyTensor binomial graph)", pt)
        run("unchanged re-run (report up to date)", new)
        run("re-run with the contrast tau prior changed, 0.5 -> 0.6 (compile and fit caches warm)", new, 0.6)
        if base:
            run(f"the same change, the source at {base_rev} (its own warm caches)", base, 0.6)
        run("the same change as session 12 ran it (RESCUEMETA_NATIVE=0, its own warm caches)", pt, 0.6)
        for a, b in ((0.6, 0.7), (0.7, 0.8), (0.8, 0.9)):
            run(f"changed again, {a} -> {b}", new, b)
            if base:
                run(f"changed again, {a} -> {b}, the source at {base_rev}", base, b)
        if base_rev:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(t / "baseline_src")],
                           capture_output=True)
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
