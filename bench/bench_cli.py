"""Benchmark: start-up and run time of the light commands (``--help``, ``--version``, ``freq``, ``check``), each a
new process, interleaved round by round with the floor any command that reads a CSV pays here (importing
pandas and pandera), so that the machine's drift over the run hits every row alike.

    .venv/bin/python bench/bench_cli.py [--rounds 15] [--out BENCHMARKS.md]

Writes the table into BENCHMARKS.md between ``<!-- bench_cli:begin -->`` and ``<!-- bench_cli:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("rescuemeta")

COMMANDS = {
    "floor: `python -c 'import pandas, pandera.pandas'`": [sys.executable, "-c", "import pandas, pandera.pandas"],
    "floor + scipy.optimize and scipy.special (what check's GLMM loaded until session 10)": [
        sys.executable, "-c", "import pandas, pandera.pandas, scipy.optimize, scipy.special"],
    "`rescuemeta --help`": [str(EXE), "--help"],
    "`rescuemeta --version`": [str(EXE), "--version"],
    "`rescuemeta freq --outcome mortality`": [str(EXE), "freq", "--outcome", "mortality"],
    "`rescuemeta freq --outcome mortality --studies`": [str(EXE), "freq", "--outcome", "mortality", "--studies"],
    "`rescuemeta check`": [str(EXE), "check"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, cwd=ROOT)
            times[name].append(time.perf_counter() - t)
            if p.returncode != 0:
                sys.exit(f"{name} failed: {p.stderr.decode()[-500:]}")
    lines = [f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}; {args.rounds} rounds, each command a new "
             "process, the rows interleaved round by round.", "",
             "| command | median s | min s | max s |", "|---|---:|---:|---:|"]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    text = out.read_text()
    begin, end = "<!-- bench_cli:begin -->", "<!-- bench_cli:end -->"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{table}\n{end}", text,
                      flags=re.S)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)


if __name__ == "__main__":
    main()
