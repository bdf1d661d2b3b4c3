"""Benchmarks: print figures (steps/s of the simulator; the checker's figures once it exists)."""

from __future__ import annotations

import time

from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario, System


def bench_simulator() -> None:
    system = System(DESIGNS["smram-default-smbase"], Scenario())
    t0 = time.perf_counter()
    steps = 0
    runs = 20
    for seed in range(runs):
        steps += len(simulate(system, seed=seed).steps)
    dt = time.perf_counter() - t0
    print(f"simulator: {runs} default runs, {steps} steps in {dt:.2f} s = {steps / dt:,.0f} steps/s")


if __name__ == "__main__":
    bench_simulator()
