"""Benchmarks: the figures of issue 10's targets, each with its ratio to the last landed version.

    python bench/run.py                  # every target (~2 hours: target 1 gives `all` 30 minutes, twice)
    python bench/run.py --target 2       # one target (repeatable: --target 2 --target 3)
    python bench/run.py --quick          # targets 2-6 on smaller bounds (minutes)
    python bench/run.py --baseline REF   # compare with REF (default: main as the last stop landed it)

Every measurement runs in a fresh process (bench/measure.py) so its time and peak memory are
its own; the last landed version runs from a detached git worktree of REF under .bench/ with
PYTHONPATH, in the same bench run, right after this tree's figure, so the ratio compares the two
under the same load (on a shared machine, repeat a target whose load was high: the load average
is printed with each figure).  Targets (issue 10):

1. shipped × all, default configuration: exhaustive, ≤ 30 min wall, ≤ 12 GiB peak (the last
   landed version cannot finish it: its ratio is taken on a common depth bound; the full run gives
   `all` and `all` without os-ipi 30 minutes each and prints how far they got);
2. --workers 2 ≥ 1.7× faster than --workers 1, identical result;
3. the same on a local 2-worker Dask cluster, identical, ≥ 1.5× faster than 1 worker;
4. memory per visited state ≤ 40 bytes exact, ≤ 16 bytes with fingerprints;
5. matrix on the default configuration: no cell incomplete but all × the two designs that hold,
   every cell but the `all` column in ≤ 10 s wall on 2 cores;
6. 4 boot + 4 plugged, shipped × all: first layers, projection, depth reached in 10 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "3b475bc86e2783c02f0fc47503db005443fb8a34"  # main as the last stop landed it (issues 10-16 merged)
DEFAULT = [2, 4, 2, 1]
# `all` as issue 10 was written, before the general IPI attacker os-ipi joined it (issue 11).
WITHOUT_OS_IPI = [
    "os-code-at-default-smbase",
    "dma-code-at-default-smbase",
    "os-early-smi",
    "os-early-init-sipi",
    "os-smbase-msr-write",
    "os-hotplug-register-tamper",
    "os-smram-reconfig",
    "dma-tseg",
    "concurrent-plug",
    "unplug-race",
    "replug-same-slot",
    "os-init-in-smm",
]
BIG = [4, 8, 4, 1]


def _baseline_tree(ref: str) -> Path:
    sha = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = ROOT / ".bench" / f"baseline-{sha[:12]}"
    if not (tree / "src").is_dir():
        tree.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True, capture_output=True
        )
    return tree


def measure(job: dict[str, Any], tree: Path | None = None) -> dict[str, Any]:
    """Run one job in a fresh process, against this tree or the baseline ``tree``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str((tree or ROOT) / "src")
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "measure.py"), json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise click.ClickException(f"measurement failed: {job}\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load"] = load
    return out


def _same(a: dict, b: dict) -> bool:
    keys = ("verdict", "prop", "states", "transitions", "depth", "schedule", "findings")
    return all(a.get(k) == b.get(k) for k in keys)


def _fig(r: dict) -> str:
    bound = f", every schedule of ≤ {r['bound']} steps" if r.get("bound") is not None else ""
    return (
        f"{r['verdict']}{bound}: {r['states']:,} states, {r['transitions']:,} transitions, "
        f"depth {r['depth']}, "
        f"{r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, {r['states'] / max(r['wall'], 1e-9):,.0f} states/s, "
        f"peak {r['peak_mib']:,.0f} MiB (load {r['load']:.1f})"
    )


def _check(scenario: list[int], attacks: list[str], limits: dict, options: dict | None = None) -> dict:
    job: dict[str, Any] = {"kind": "check", "scenario": scenario, "attacks": attacks, "limits": limits}
    if options is not None:
        job["options"] = options
    return job


def target1(base: Path, quick: bool) -> None:
    bound = {"depth": 59 if quick else 61}
    new = measure(_check(DEFAULT, ["all"], bound, {"workers": 2}))
    old = measure(_check(DEFAULT, ["all"], bound), base)
    print(f"  common bound, this tree (2 workers): {_fig(new)}")
    print(f"  common bound, last landed (1 process): {_fig(old)}")
    print(
        f"  ratio (wall, last landed / this tree): {old['wall'] / new['wall']:.2f}×; "
        f"same result: {_same(new, old)}"
    )
    if quick:
        return
    # The target's own budget, on `all` and on `all` as the issue was written (before os-ipi).
    share = "none (no partial-order reduction: see README, Performance)"
    for label, attacks in (("all", ["all"]), ("all without os-ipi", WITHOUT_OS_IPI)):
        full = measure(_check(DEFAULT, attacks, {"seconds": 1800}, {"workers": 2}))
        print(f"  {label}, 2 workers, at most 30 minutes: {_fig(full)}; reduction share: {share}")
        print(
            "  target exhaustive in ≤ 30 min and ≤ 12 GiB: "
            + ("met" if full["verdict"] != "incomplete" and full["peak_mib"] <= 12288 else "MISSED")
        )


DEPTH: dict[str, int] = {}  # --depth: the bound of targets 2 and 3


def _pair(quick: bool) -> dict:
    return _check(DEFAULT, ["all"], {"depth": DEPTH.get("pair") or (58 if quick else 60)})


def _balance(one: dict, many: dict) -> str:
    """What the speed-up would be on otherwise idle cores: one process's CPU time over the
    busiest worker's (the workers run side by side; the driver only routes)."""
    cpus = many["stats"].get("worker_cpu_seconds") or [many["cpu"]]
    return (
        f"CPU: 1 process {one['cpu']:.1f} s; workers {', '.join(f'{c:.1f}' for c in cpus)} s, driver "
        f"{many['stats'].get('driver_cpu_seconds', 0):.1f} s: speed-up on idle cores ≤ "
        f"{one['cpu'] / max(cpus):.2f}×"
    )


def target2(base: Path, quick: bool) -> None:
    job = _pair(quick)
    one = measure({**job, "options": {"workers": 1}})
    two = measure({**job, "options": {"workers": 2}})
    old = measure(job, base)
    print(f"  --workers 1: {_fig(one)}")
    print(f"  --workers 2: {_fig(two)}")
    print(f"  last landed: {_fig(old)}")
    speedup = one["wall"] / two["wall"]
    print(f"  {_balance(one, two)}")
    print(
        f"  --workers 2 is {speedup:.2f}× faster than --workers 1 (target ≥ 1.7); "
        f"{old['wall'] / two['wall']:.2f}× faster than the last landed version; "
        f"identical: {_same(one, two) and _same(one, old)}"
    )


def target3(base: Path, quick: bool) -> None:
    job = _pair(quick)
    one = measure({**job, "options": {"workers": 1}})
    dask = measure({**job, "options": {"workers": 2, "local_cluster": 1}})
    old = measure(job, base)
    print(f"  1 worker: {_fig(one)}")
    print(f"  local Dask cluster, 2 workers: {_fig(dask)}")
    print(f"  {_balance(one, dask)}")
    print(
        f"  the cluster is {one['wall'] / dask['wall']:.2f}× faster than 1 worker (target ≥ 1.5), "
        f"{old['wall'] / dask['wall']:.2f}× faster than the last landed version; "
        f"identical: {_same(one, dask) and _same(one, old)}"
    )


def target4(base: Path, quick: bool) -> None:
    job = _check(DEFAULT, ["all"], {"depth": 57 if quick else 60})
    for fingerprint, bound in ((False, 40), (True, 16)):
        r = measure({**job, "options": {"fingerprint": fingerprint}})
        per = r["stats"]["visited_bytes"] / r["states"]
        graph = r["stats"]["graph_bytes"] / r["states"]
        print(
            f"  {'fingerprint' if fingerprint else 'exact'}: visited set {per:.1f} bytes/state "
            f"(target ≤ {bound}), BFS tree {graph:.1f} bytes/state, "
            f"process {(r['peak_mib'] - r['start_mib']) * 2**20 / r['states']:,.0f} bytes/state "
            f"({r['states']:,} states, peak {r['peak_mib']:,.0f} MiB)"
        )
    old = measure(job, base)
    per_old = (old["peak_mib"] - old["start_mib"]) * 2**20 / old["states"]
    print(f"  last landed: process {per_old:,.0f} bytes/state, peak {old['peak_mib']:,.0f} MiB")


def target5(base: Path, quick: bool) -> None:
    cap = {"states": 300_000}
    for label, without in (("every cell but the `all` column", ["all"]), ("whole matrix", [])):
        if quick and not without:
            continue
        job = {"kind": "matrix", "scenario": DEFAULT, "limits": cap, "without": without}
        new, old = measure(job), measure(job, base)
        print(
            f"  {label}: {new['cells']} cells in {new['wall']:.1f} s wall (last landed {old['wall']:.1f} s, "
            f"ratio {old['wall'] / new['wall']:.2f}×), {new['verdicts']}, incomplete: "
            f"{', '.join(new['incomplete']) or 'none'}; "
            f"slowest {new['slowest'][1]} {new['slowest'][0]:.1f} s; "
            f"peak {new['peak_mib']:,.0f} MiB (load {new['load']:.1f})"
        )


def target6(base: Path, quick: bool) -> None:
    seconds = 60 if quick else 600
    new = measure(_check(BIG, ["all"], {"seconds": seconds}, {"workers": 2}))
    old = measure(_check(BIG, ["all"], {"seconds": seconds}), base)
    print(f"  this tree, 2 workers, {seconds} s: {_fig(new)}")
    print(f"  last landed, {seconds} s: {_fig(old)}")
    sizes = new["layer_sizes"]
    print(
        f"  first layers: {', '.join(f'{n:,}' for n in sizes[:12])} ... "
        f"last {', '.join(f'{n:,}' for n in sizes[-4:])}"
    )


TARGETS = {1: target1, 2: target2, 3: target3, 4: target4, 5: target5, 6: target6}


@click.command()
@click.option("--target", "targets", type=click.IntRange(1, 6), multiple=True, help="Run only this target.")
@click.option("--quick", is_flag=True, help="Smaller bounds (minutes instead of hours).")
@click.option("--baseline", default=BASELINE, show_default=True, help="Git ref of the last landed version.")
@click.option("--depth", type=int, default=None, help="Bound of targets 2 and 3 (default 60; quick 58).")
def main(targets: tuple[int, ...], quick: bool, baseline: str, depth: int | None) -> None:
    if depth is not None:
        DEPTH["pair"] = depth
    base = _baseline_tree(baseline)
    for t in targets or sorted(TARGETS):
        print(f"target {t}:", flush=True)
        TARGETS[t](base, quick)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
