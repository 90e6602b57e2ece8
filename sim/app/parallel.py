"""Independent simulation jobs in parallel: on this machine, or on a Dask cluster.

Most jobs here run the Verilator harness in a subprocess, so a thread per
job is enough on one machine: the Python thread only waits.  Jobs that
compute in Python (a design sweep compiles each network) run in processes.  Given a Dask
scheduler (an address such as ``tcp://10.0.0.5:8786``, or a
``distributed.Client``), the jobs go to its workers instead; each worker
builds (or finds in its cache) the harness it needs.
"""

import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

__all__ = ["run_parallel", "job_pool", "default_workers"]


def default_workers():
    """Jobs at once on this machine: one per core."""
    return max(os.cpu_count() or 1, 1)


def run_parallel(function, jobs, *, workers=None, dask=None, done=None, processes=False):
    """``[function(*job) for job in jobs]``, computed in parallel.

    ``workers``: jobs at once on this machine (default: one per core);
    ``dask``: a scheduler address or a ``distributed.Client`` to run them on
    instead; ``done``: called once per job, in the jobs' order, as each result
    is collected; ``processes``: on this machine, a process per worker instead
    of a thread (for jobs that compute in Python, not only wait)."""
    with job_pool(workers=workers, dask=dask, processes=processes) as pool:
        futures = [pool.submit(function, *job) for job in jobs]
        results = []
        for future in futures:
            results.append(future.result())
            if done:
                done()
        return results


@contextmanager
def job_pool(*, workers=None, dask=None, processes=False):
    """A pool whose ``submit(function, *args)`` starts a job at once and returns
    a future (``.result()``): ``workers`` threads (or, with ``processes``,
    processes started afresh, so ``function`` and its arguments must pickle)
    on this machine, or the Dask cluster ``dask`` (a scheduler address or a
    ``distributed.Client``)."""
    if dask is None:
        workers = workers or default_workers()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if processes \
            else ThreadPoolExecutor(max_workers=workers)
        with pool:
            yield pool
        return
    client, owned = _client(dask)
    try:
        yield _DaskPool(client)
    finally:
        if owned:
            client.close()


class _DaskPool:
    def __init__(self, client):
        self._client = client

    def submit(self, function, *args):
        return self._client.submit(function, *args, pure=False)


def _client(dask):
    """``(client, owned)`` for a scheduler address or a client."""
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError("--dask needs the 'distributed' package: pip install 'neuflow[dask]'") from None
    if isinstance(dask, Client):
        return dask, False
    try:
        return Client(dask, timeout="10s"), True
    except (OSError, TimeoutError, ValueError) as exc:
        raise RuntimeError(f"--dask {dask}: cannot reach the scheduler ({exc})") from None
