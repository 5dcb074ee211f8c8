"""The Dask cluster (params resources.dask_scheduler, else DASK_SCHEDULER_ADDRESS) whose workers read the same
parquet files as this machine: the repository on a filesystem every worker mounts at the same path, or an S3
URL. Imported only when a scheduler is configured: without one, nothing of Dask is imported."""

from __future__ import annotations

from pathlib import Path

from churn.errors import ChurnError


def location(path: str | Path) -> str:
    """An absolute path (the workers resolve it on their filesystem) or a URL as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def client(address: str):
    """A distributed.Client of the scheduler at `address`; an unreachable one is a one-line error."""
    from distributed import Client

    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ChurnError(
            f"Dask scheduler {address}: not reachable ({exc}); check resources.dask_scheduler or DASK_SCHEDULER_ADDRESS"
        ) from None
