"""The search on a Dask cluster: one ``Partition`` per Dask worker, held as a Dask actor.

Dask distributed (``dask scheduler`` and ``dask worker``, or ``LocalCluster``) provides what a
search on many machines needs and this project should not write itself: starting and
addressing worker processes on other hosts, moving (pickled, numpy) data between them, and
reporting their failures.  The driver (``checker.parallel``) calls each phase on every actor
and routes the successors between them; every method call is an actor call.

``check --cluster ADDRESS`` connects to a running scheduler (``--cluster env`` takes
``DASK_SCHEDULER_ADDRESS``, Dask's own setting); ``smm-hotplug cluster-local --workers N``
starts a scheduler and N single-threaded worker processes on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from smm_hotplug.errors import UsageError

ENV = "DASK_SCHEDULER_ADDRESS"


def _client(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise UsageError("--cluster needs the Python package 'distributed' (Dask)") from None
    if address == "env":
        address = os.environ.get(ENV, "")
        if not address:
            raise UsageError(f"--cluster env: {ENV} is not set")
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError) as err:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {err}") from None


class DaskPool:
    """One ``Partition`` actor on each worker of the cluster (or on the first ``workers``)."""

    def __init__(self, address: str, args: Callable[[int, int], tuple], workers: int | None = None) -> None:
        from smm_hotplug.checker.partition import Partition

        self.client = _client(address)
        names = sorted(self.client.scheduler_info()["workers"])
        if not names:
            raise UsageError(f"the Dask cluster at {address} has no workers")
        if workers is not None:
            if workers > len(names):
                raise UsageError(f"--workers {workers}: the Dask cluster has only {len(names)} workers")
            names = names[:workers]
        self.size = len(names)
        futures = [
            self.client.submit(
                Partition,
                *args(i, self.size),
                actor=True,
                workers=[name],
                allow_other_workers=False,
                pure=False,
            )
            for i, name in enumerate(names)
        ]
        self.actors = [f.result() for f in futures]
        self._futures = futures

    def call_all(self, name: str, args: list[tuple]) -> list[Any]:
        calls = [getattr(actor, name)(*a) for actor, a in zip(self.actors, args, strict=True)]
        return [c.result() for c in calls]

    def close(self, abort: bool = False) -> None:
        """Let the actors go (a call still running on one, after Ctrl-C, ends on its own)."""
        for f in self._futures:
            f.release()
        self.actors = []
        self.client.close()


def run_local_cluster(workers: int, port: int, ready: Callable[[str], None] | None = None) -> None:
    """A scheduler and ``workers`` single-threaded worker processes here, until interrupted."""
    import time

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        scheduler_port=port,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        if ready is not None:
            ready(cluster.scheduler_address)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
