"""Independent simulation jobs in parallel: on this machine, or on a Dask cluster.

Every job here runs the Verilator harness in a subprocess, so a thread per
job is enough on one machine: the Python thread only waits.  Given a Dask
scheduler (an address such as ``tcp://10.0.0.5:8786``, or a
``distributed.Client``), the jobs go to its workers instead; each worker
builds (or finds in its cache) the harness it needs.
"""

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_parallel", "default_workers"]


def default_workers():
    """Jobs at once on this machine: one per core."""
    return max(os.cpu_count() or 1, 1)


def run_parallel(function, jobs, *, workers=None, dask=None, done=None):
    """``[function(*job) for job in jobs]``, computed in parallel.

    ``workers``: jobs at once on this machine (default: one per core);
    ``dask``: a scheduler address or a ``distributed.Client`` to run them on
    instead; ``done``: called once as each job finishes."""
    jobs = list(jobs)
    if dask is not None:
        return _on_dask(function, jobs, dask, done)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = [pool.submit(function, *job) for job in jobs]
        results = []
        for future in futures:
            results.append(future.result())
            if done:
                done()
        return results


def _on_dask(function, jobs, dask, done):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("--dask needs the 'distributed' package: pip install 'neuflow[dask]'") from None
    if isinstance(dask, Client):
        client = dask
    else:
        try:
            client = Client(dask, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"--dask {dask}: cannot reach the scheduler ({exc})") from None
    try:
        futures = [client.submit(function, *job, pure=False) for job in jobs]
        if done:
            for _ in as_completed(futures):
                done()
        return client.gather(futures)
    finally:
        if client is not dask:
            client.close()
