"""The runner of configuration grids (prior sensitivity, simulation studies): every configuration not already in
the cache, grouped by compiled model structure so that each group compiles once, in this process, in local
worker processes, or on a Dask distributed cluster; each row is cached as one JSON file (written atomically) as
soon as it exists, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .atomic import cache_key, clean_stale_parts, ensure_dir, to_jsonable, write_text
from .data import load_studies

__all__ = ["config_hash", "GridResult", "run_grid"]


def config_hash(cfg: dict, data_sha256: str) -> str:
    """Cache key: data hash + model + priors + inclusion + sampler settings (+ package version and source
    fingerprint; :func:`rescuemeta.atomic.cache_key`)."""
    return cache_key({"cfg": cfg, "data": data_sha256})


# cache (one JSON file per configuration, written atomically)

def _cache_put(cache_dir: str, key: str, row: dict) -> None:
    write_text(Path(cache_dir) / f"{key}.json", json.dumps(to_jsonable(row)) + "\n")


def _cache_get(cache_dir: str, key: str) -> dict | None:
    p = Path(cache_dir) / f"{key}.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # never trust an unreadable entry: recompute it


# the runner

CHUNK = 100  # simulated meta-analyses per Dask task

@dataclass
class GridResult:
    rows: list[dict]
    computed: int
    cached: int
    seconds: float


def _groups(todo: list[dict], workers: int) -> list[list[dict]]:
    from .sensitivity import _structure

    by = defaultdict(list)
    for cfg in todo:
        by[_structure(cfg)].append(cfg)
    groups = list(by.values())
    # split large groups so that every worker has work (each piece compiles once in its worker)
    while len(groups) < workers and max(len(g) for g in groups) > 1:
        groups.sort(key=len)
        big = groups.pop()
        half = len(big) // 2
        groups += [big[:half], big[half:]]
    return groups


def run_grid(cfgs: list[dict], data_path: str, *, cache_dir: str | None, workers: int = 1,
             scheduler: str | None = None, progress=None, fit_cache: str | None = None) -> GridResult:
    """Run every configuration not already in the cache.

    Parameters
    ----------
    cfgs : list of dict
        From :func:`grid` (or :func:`simulation_grid`).
    data_path : str
        The study table (read here; Dask workers are sent the table itself, not the path).
    cache_dir : str or None
        One JSON file per configuration hash; re-running after an interruption only computes what is missing.
    workers : int
        Local processes (1 = in this process).
    scheduler : str, optional
        A Dask distributed scheduler address (``tcp://host:port``) or a ``distributed.Client``; the groups are
        then mapped on that cluster instead.
    progress : callable, optional
        Called with the number of configurations finished so far.
    fit_cache : str, optional
        A fit cache directory (:func:`rescuemeta.fit.fit_cached`) that fitted rows read their draws from when an
        earlier fit of the same configuration left them there (the report passes its main analysis's): the same
        numbers, without sampling again. Local runs only (a Dask worker cannot see this machine's disk).

    Returns
    -------
    GridResult
        ``rows`` in the order of ``cfgs``.
    """
    t0 = time.perf_counter()
    sha = load_studies(data_path).sha256 if not cfgs or "simulation" not in cfgs[0] else "simulation"
    if cache_dir is not None:
        ensure_dir(cache_dir)
        clean_stale_parts(cache_dir)  # left by a writer that was killed mid-write
    keys = [config_hash(c, sha) for c in cfgs]
    rows: dict[str, dict] = {}
    for key in keys:
        hit = _cache_get(cache_dir, key) if cache_dir is not None else None
        if hit is not None:
            rows[key] = hit
    cached = len(rows)
    todo = [c for c, k in zip(cfgs, keys) if k not in rows]
    done = cached
    if progress:
        progress(done)
    from .sensitivity import run_group
    from .simulate import run_sim_group

    runner = run_sim_group if (todo and "simulation" in todo[0]) else partial(run_group, fit_cache=fit_cache)
    if todo:
        groups = _groups(todo, max(workers, 1))
        if scheduler is not None:
            from distributed import Client, as_completed

            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            try:
                # every worker thread gets work; simulated meta-analyses go in chunks of CHUNK, so that rows reach
                # the cache (and an interrupted study resumes) as the chunks finish, not at the end
                groups = _groups(todo, max(workers, sum(client.nthreads().values()), 1))
                if "simulation" in todo[0]:
                    groups = [g[i:i + CHUNK] for g in groups for i in range(0, len(g), CHUNK)]
                # the workers get the study table itself (scattered once to every worker), never a path: a
                # worker runs in its own directory, on a real cluster on another machine; rows come back here
                # and are cached by this process
                table = None if "simulation" in todo[0] else load_studies(data_path)
                data = client.scatter(table, broadcast=True) if table is not None else None
                remote = run_sim_group if "simulation" in todo[0] else run_group  # (no fit cache: not their disk)
                futures = client.map(remote, groups, data_path=data, cache_dir=None, data_sha256=sha, pure=False)
                for fut, res in as_completed(futures, with_results=True):
                    for c, r in zip(groups[futures.index(fut)], res):
                        rows[config_hash(c, sha)] = r
                        if cache_dir is not None:
                            _cache_put(cache_dir, config_hash(c, sha), r)
                    done += len(res)
                    if progress:
                        progress(done)
            finally:
                if not isinstance(scheduler, Client):
                    client.close()
        elif workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures import as_completed as cf_completed

            ctx = mp.get_context("spawn")  # nutpie/numba state must not be forked
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = {pool.submit(runner, g, data_path, cache_dir, sha): g for g in groups}
                for fut in cf_completed(futs):
                    for c, r in zip(futs[fut], fut.result()):
                        rows[config_hash(c, sha)] = r
                    done += len(futs[fut])
                    if progress:
                        progress(done)
        else:
            def on_row(c, r):
                nonlocal done
                rows[config_hash(c, sha)] = r
                done += 1
                if progress:
                    progress(done)

            for g in groups:
                runner(g, data_path, cache_dir, sha, on_row=on_row)
    ordered = [to_jsonable(rows[k]) for k in keys]
    return GridResult(ordered, computed=len(todo), cached=cached, seconds=time.perf_counter() - t0)
