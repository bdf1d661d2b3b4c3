"""One measurement for bench/run.py, in a process of its own: prints one JSON line.

It runs against whichever smm_hotplug is first on PYTHONPATH — this tree, or the last landed
version checked out by bench/run.py — so it uses only the API both have (``run_check``,
``run_matrix``), and the search options only where this tree has them.

    python bench/measure.py '{"kind": "check", "design": "...", "attacks": ["all"], ...}'
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def _peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # KiB on Linux; workers' peaks add up (children: the largest)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def check(job: dict[str, Any]) -> dict[str, Any]:
    from smm_hotplug.checker.limits import Limits
    from smm_hotplug.checker.run import run_check
    from smm_hotplug.checker.traces import CheckSetup
    from smm_hotplug.world import Scenario

    setup = CheckSetup(
        job.get("design", "smram-default-smbase"), Scenario(*job["scenario"]), tuple(job["attacks"])
    )
    limits = Limits(**job.get("limits", {}))
    kwargs: dict[str, Any] = {}
    options = job.get("options")
    cluster = None
    if options is not None:
        from smm_hotplug.checker.search import Options

        if options.pop("local_cluster", 0):
            from distributed import LocalCluster

            cluster = LocalCluster(
                n_workers=options["workers"], threads_per_worker=1, dashboard_address=None, host="127.0.0.1"
            )
            options = {**options, "cluster": cluster.scheduler_address}
        kwargs["options"] = Options(**options)
    start_mib = _rss_mib()  # the interpreter and the model, before any state is stored
    layers: list[int] = []
    kwargs["progress"] = lambda states, transitions, depth: layers.append(states)
    t0, c0 = time.perf_counter(), _cpu()
    try:
        res = run_check(setup, limits=limits, describe=False, **kwargs)
    finally:
        if cluster is not None:
            cluster.close()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    sizes = [b - a for a, b in zip([0, *layers[:-1]], layers, strict=True)] if layers else []
    return {
        "verdict": res.verdict,
        "prop": res.prop,
        "states": res.states,
        "transitions": res.transitions,
        "depth": res.depth,
        "bound": res.bound,
        "stopped": res.stopped,
        "schedule": res.schedule,
        "findings": [[f.prop, f.schedule] for f in getattr(res, "findings", [])],
        "wall": wall,
        "cpu": cpu,
        "peak_mib": _peak_mib(),
        "start_mib": start_mib,
        "stats": getattr(res, "stats", {}),
        "layer_sizes": sizes,
    }


def matrix(job: dict[str, Any]) -> dict[str, Any]:
    from smm_hotplug.checker.limits import Limits
    from smm_hotplug.checker.run import matrix_columns, run_matrix
    from smm_hotplug.world import Scenario

    columns = [c for c in matrix_columns() if c not in job.get("without", [])]
    t0 = time.perf_counter()
    results = run_matrix(Scenario(*job["scenario"]), limits=Limits(**job.get("limits", {})), columns=columns)
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "cells": len(results),
        "verdicts": {v: sum(r.verdict == v for r in results) for v in ("holds", "violated", "incomplete")},
        "incomplete": [
            f"{r.design} × {'+'.join(r.attacks) or 'none'}" for r in results if r.verdict == "incomplete"
        ],
        "states": sum(r.states for r in results),
        "slowest": max((r.seconds, f"{r.design} × {'+'.join(r.attacks) or 'none'}") for r in results),
        "peak_mib": _peak_mib(),
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    out = {"check": check, "matrix": matrix}[job["kind"]](job)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
