"""Whether a report is up to date: the stamp ``rescuemeta analyze`` writes beside a finished report (what it was
made from, the files it wrote, its result), read before anything heavy is imported, so that re-running an
unchanged analysis costs what reading the inputs costs (issue 19)."""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["current_report", "input_hash", "up_to_date"]


def current_report(out_dir, inputs: str) -> dict | None:
    """The stamp of the report in ``out_dir`` when it was made from ``inputs`` (:func:`input_hash`: spec, data and
    its description, published estimates, draws, code) and every file it lists exists; else None."""
    stamp_path = Path(out_dir) / ".inputs.json"
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp["inputs"] == inputs and all((Path(out_dir) / f).exists() for f in stamp["files"]):
            return stamp
    except (OSError, ValueError, KeyError):
        pass  # no stamp or an unreadable one: rebuild
    return None


def input_hash(spec_path, table, abstract_path, draws) -> str:
    """What the report was made from: spec, data and its description, published estimates and their description,
    draws (+ package version and source fingerprint; :func:`rescuemeta.atomic.cache_key`)."""
    from .atomic import cache_key, file_digest

    return cache_key({"spec": file_digest(spec_path) if spec_path is not None else "defaults", "data": table.sha256,
                      "description": file_digest(table.description.path) if table.description.path else None,
                      "abstract": file_digest(abstract_path) if abstract_path is not None else "no abstract",
                      "abstract_description": (file_digest(Path(abstract_path).with_suffix(".toml"))
                                               if abstract_path is not None else None),
                      "draws": draws}, length=64)


def up_to_date(out_dir, inputs: str, t0: float) -> dict | None:
    """The result ``rescuemeta.report.analyze`` returns for a report that is current (``up_to_date`` True, nothing
    computed; ``seconds`` since ``t0``), or None when it must be rebuilt."""
    stamp = current_report(out_dir, inputs)
    if stamp is None:
        return None
    res = stamp["result"]
    return {**res, "up_to_date": True, "seconds": time.perf_counter() - t0, "grid_computed": 0,
            "grid_cached": res["grid_computed"] + res["grid_cached"]}
