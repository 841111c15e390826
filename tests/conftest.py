import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DATASETS = TESTS / "data" / "datasets"
CI = os.environ.get("CI", "").lower() == "true"

# Before the xdist workers start (issue 19: the suite within 10 minutes on 2 cores from empty compile caches): the
# two models nearly every test file samples, the shared binomial model (contrast, proportion, meta-regression: its
# hand-written density, rescuemeta.native, compiles in seconds; then the normal graph of the uniform tau prior) and
# the padded normal graph, compiled side by side in two processes into the on-disk caches (numba's code and the
# rewritten graphs), so that the workers load them instead of each compiling them (both workers at once).
_PRECOMPILE = """
import sys
import numpy as np
from rescuemeta.models import ModelData
from rescuemeta.priors import parse
from rescuemeta.sampling import Sampler
tau, eff, base = parse("halfnormal(0.5)"), parse("normal(0, 4)", "effect"), parse("normal(0, 10)", "effect")
normal = ModelData("normal", {"y": np.array([0.1, -0.2]), "s": np.array([0.3, 0.4])})
if sys.argv[1] == "binomial":  # the hand-written binomial density (seconds), then the uniform tau prior's graph
    md = ModelData("contrast", {"ai": np.array([3, 5]), "n1i": np.array([20, 30]), "ci": np.array([6, 9]),
                                "n2i": np.array([21, 28])})
    Sampler()._compiled(md, tau, eff, base)
    Sampler()._compiled(normal, parse("uniform(0, 2)"), eff, None)
else:
    Sampler()._compiled(normal, tau, eff, None)
"""


# The test files that take longest (each a work unit of `--dist loadfile`), longest first: with two workers, starting
# the long files first and leaving the many short ones to fill in at the end keeps both workers busy to the last
# minute (longest-processing-time-first; order from a `--durations=0` run, session 10). xdist's default reorders
# files by their number of tests instead, which can put the few slow whole-analysis files last.
SLOWEST_FILES = ("test_sensitivity.py", "test_report.py", "test_pipeline.py", "test_any_data.py", "test_sbc.py",
                 "test_bridge_sampling.py", "test_criticism.py", "test_kill.py", "test_compiled.py", "test_fit_contract.py",
                 "test_notebooks.py", "test_nuts_vs_exact.py", "test_extreme_data.py", "test_reported_effects.py",
                 "test_models_rescue_data.py", "test_freq_root.py", "test_determinism.py", "test_parameterisation.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # keep the order above (see SLOWEST_FILES)
    if hasattr(config, "workerinput") or os.environ.get("RESCUEMETA_PRECOMPILE", "1") == "0":
        return  # an xdist worker, or turned off
    n = getattr(config.option, "numprocesses", None)
    if not isinstance(n, int) or n < 2:
        return
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", _PRECOMPILE, g], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for g in ("binomial", "normal")]
    for p in procs:  # a failure here only means the workers compile as before
        try:
            p.wait(timeout=900)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="session")
def metafor_reference():
    return json.loads((TESTS / "data" / "metafor_reference.json").read_text())


def load_dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(DATASETS / f"{name}.csv")
