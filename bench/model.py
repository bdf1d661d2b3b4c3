"""The model's figures: simulator speed, checker rate and size of chosen cells, the matrix under
both accelerators and the history catalog (bench/run.py measures issue 10's search targets).

    python bench/model.py            # everything (~40 min on 2 cores, 1.6 GiB for the 4 + 4 benign run)
    python bench/model.py --quick    # the small figures only (~5 min: `all` with one os-ipi is 3)
    python bench/model.py --default-all 0   # also shipped × all, default config, until the memory limit
                                            # (~95 min, ~20 GiB on a 24 GiB machine)
    python bench/model.py --all-small-cap 5000000   # also shipped × all on 1 boot + 1 plugged CPU,
                                                    # kvm and tcg, up to 5 M states (~25 min)

Each benchmark runs in a fresh process so that its peak memory (max RSS, including the worker
processes of the matrix) is its own.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import click

from smm_hotplug.checker.limits import Limits, rss_mib
from smm_hotplug.checker.run import run_check, run_matrix
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DEFAULT_DESIGN, DESIGNS
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario, System

SHIPPED = DEFAULT_DESIGN
BIG = Scenario(boot_cpus=4, max_cpus=8, plug=4, unplug=1)


def peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # ru_maxrss is in KiB on Linux


def bench_simulator() -> str:
    system = System(DESIGNS[SHIPPED], Scenario())
    t0 = time.perf_counter()
    steps = runs = 0
    for seed in range(20):
        steps += len(simulate(system, seed=seed).steps)
        runs += 1
    dt = time.perf_counter() - t0
    return f"simulator: {runs} default runs, {steps:,} steps in {dt:.2f} s = {steps / dt:,.0f} steps/s"


def _check(
    label: str,
    scenario: Scenario,
    attacks: tuple[str, ...],
    cap: int | None,
    budgets: tuple[tuple[str, int], ...] = (),
    accel: str | None = None,
) -> str:
    before = rss_mib()
    setup = CheckSetup(SHIPPED, scenario, attacks, accel=accel, budgets=budgets)
    res = run_check(setup, limits=Limits(states=cap), describe=False)
    rate = res.states / res.seconds if res.seconds else 0.0
    per_state = (peak_mib() - before) * 2**20 / max(res.states, 1)
    bound = "" if res.bound is None else f" (every schedule of up to {res.bound} steps checked)"
    return (
        f"{label}: {res.verdict}{bound}, {res.states:,} states, {res.transitions:,} transitions, "
        f"depth {res.depth}, {res.seconds:.1f} s = {rate:,.0f} states/s, ~{per_state:,.0f} bytes/state"
    )


def bench_checker_rate() -> str:
    return _check(f"checker, {SHIPPED} × os-early-smi, default config", Scenario(), ("os-early-smi",), None)


def bench_all_small() -> str:
    """`all` on the smallest hot-add, with os-ipi's budget at 1 (at its default 3 the space is
    beyond millions of states: `--all-small-cap`)."""
    label = f"checker, {SHIPPED} × all (os-ipi budget 1), 1 boot + 1 plugged"
    return _check(label, Scenario(1, 2, 1, 0), ("all",), None, budgets=(("os-ipi", 1),))


def bench_all_small_default_budget(cap: int, accel: str) -> str:
    label = f"checker, {SHIPPED} × all, 1 boot + 1 plugged, accel {accel} (capped at {cap:,} states)"
    return _check(label, Scenario(1, 2, 1, 0), ("all",), cap, accel=accel)


def bench_big_benign() -> str:
    return _check(f"checker, {SHIPPED} benign, 4 boot + 4 plugged, unplug 1", BIG, (), None)


def bench_big_all(cap: int | None) -> str:
    limit = "exhaustive" if cap is None else f"capped at {cap:,} states"
    label = f"checker, {SHIPPED} × all, 4 boot + 4 plugged ({limit}; target ≤ 60 s)"
    return _check(label, BIG, ("all",), cap)


def bench_default_all(cap: int) -> str:
    """The shipped design under every adversary at once on the default configuration (the `all`
    cell the matrix caps), up to ``cap`` states (0: until the automatic memory limit): long, and
    about 0.3 KiB of memory per state."""
    limit = f"capped at {cap:,} states" if cap else "up to the automatic memory limit"
    label = f"checker, {SHIPPED} × all, default config ({limit})"
    return _check(label, Scenario(), ("all",), cap or None)


def bench_matrix(cap: int | None, accel: str = "kvm") -> str:
    t0 = time.perf_counter()
    results = run_matrix(Scenario(), limits=Limits(states=cap), accel=accel)
    dt = time.perf_counter() - t0
    verdicts = {v: sum(r.verdict == v for r in results) for v in ("holds", "violated", "incomplete")}
    slowest = max(results, key=lambda r: r.seconds)
    states = sum(r.states for r in results)
    limit = "uncapped" if cap is None else f"cells capped at {cap:,} states"
    return (
        f"matrix, accel {accel}, default config ({limit}; target ≤ 10 s): "
        f"{len(results)} cells in {dt:.1f} s wall, "
        f"{states:,} states; {verdicts}; slowest cell {slowest.design} × "
        f"{(slowest.attacks or ['none'])[0]} {slowest.seconds:.1f} s"
    )


def bench_history() -> str:
    """The history catalog (`matrix --history`, also run by tests/test_history.py): every entry's
    scenario with its fix reverted and in place, on two workers."""
    from smm_hotplug.checker.history import run_history

    t0 = time.perf_counter()
    results = run_history(workers=2)
    dt = time.perf_counter() - t0
    checks = [c for r in results for c in (r.reverted, r.fixed)]
    slowest = max(results, key=lambda r: r.reverted.seconds + r.fixed.seconds)
    good = sum(r.ok for r in results)
    return (
        f"history catalog: {len(results)} entries ({good} as claimed), {len(checks)} checks in {dt:.1f} s "
        f"wall, {sum(c.states for c in checks):,} states; slowest {slowest.entry.id} "
        f"{slowest.reverted.states:,} + {slowest.fixed.states:,} states, "
        f"{slowest.reverted.seconds + slowest.fixed.seconds:.1f} s"
    )


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the matrix's workers): on a machine
    shared with other work it is what the wall-clock figures would be on an idle one, per core."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _in_fresh_process(job: Callable[[], str]) -> tuple[str, float, float]:
    before = cpu_seconds()
    line = job()
    return line, peak_mib(), cpu_seconds() - before


@click.command()
@click.option("--quick", is_flag=True, help="Only the small figures (minutes: no matrix, no 4 + 4 run).")
@click.option("--cap", type=int, default=1_000_000, show_default=True, help="State cap of the big `all` run.")
@click.option(
    "--default-all",
    type=int,
    default=None,
    metavar="STATES",
    help="Also check the shipped design under `all` on the default config, up to STATES states "
    "(0: until the automatic memory limit).",
)
@click.option(
    "--all-small-cap",
    type=int,
    default=None,
    metavar="STATES",
    help="Also check the shipped design under `all` (os-ipi at its default budget) on 1 boot + 1 "
    "plugged CPU, under each accelerator, up to STATES states.",
)
def main(quick: bool, cap: int, default_all: int | None, all_small_cap: int | None) -> None:
    jobs: list[Callable[[], str]] = [bench_simulator, bench_checker_rate, bench_all_small, bench_history]
    if not quick:
        jobs += [
            bench_big_benign,
            partial(bench_matrix, 300_000),
            partial(bench_matrix, 300_000, "tcg"),
            partial(bench_big_all, cap),
        ]
    if all_small_cap is not None:
        jobs += [partial(bench_all_small_default_budget, all_small_cap, a) for a in ("kvm", "tcg")]
    if default_all is not None:
        jobs.append(partial(bench_default_all, default_all))
    for job in jobs:
        with ProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as pool:
            line, mib, cpu = pool.submit(_in_fresh_process, job).result()
        print(f"{line}; peak memory {mib:,.0f} MiB; {cpu:,.1f} CPU s", flush=True)


if __name__ == "__main__":
    main()
