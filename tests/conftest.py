import json
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DATASETS = TESTS / "data" / "datasets"
CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def metafor_reference():
    return json.loads((TESTS / "data" / "metafor_reference.json").read_text())


def load_dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(DATASETS / f"{name}.csv")
