"""`smm-hotplug cluster-local`: a Dask cluster on this machine for `check --cluster`."""

from __future__ import annotations

import click

from smm_hotplug.interfaces.cli.options import check_workers


@click.command("cluster-local")
@click.option("--workers", type=int, default=2, show_default=True, help="Worker processes (one thread each).")
@click.option("--port", type=int, default=8786, show_default=True, help="Port of the scheduler (0: any).")
def cluster_local(workers: int, port: int) -> None:
    """Start a Dask scheduler and WORKERS worker processes on this machine, for `check --cluster`;
    runs until Ctrl-C.  (Dask's own `dask scheduler` and `dask worker` do the same across hosts.)"""
    from smm_hotplug.checker.cluster import ENV, run_local_cluster

    check_workers(workers)

    def ready(address: str) -> None:
        click.echo(f"Dask scheduler at {address} with {workers} workers; Ctrl-C stops it.")
        click.echo(f"  smm-hotplug check --cluster {address} ...   (or: export {ENV}={address})")

    run_local_cluster(workers, port, ready)
