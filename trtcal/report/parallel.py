"""The report's work in several processes: thresholds by chunks of tensors, plots one by one.

matplotlib and the threshold searches hold the GIL, so threads would not help: processes do,
forked where the platform allows (the parent's imports come for free), else spawned.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

#: At most this many processes by default (each holds matplotlib, about 60 MB).
MAX_DEFAULT_JOBS = 8


def default_jobs() -> int:
    """The CPUs this process may use, at most :data:`MAX_DEFAULT_JOBS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_JOBS))


def _context():
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def pool_map(fn, items: list, *, jobs: int = 1, progress=None) -> list:
    """``[fn(x) for x in items]``, in order, by ``jobs`` processes (in this one when ``jobs`` is 1
    or there is at most one item); ``progress.update()`` after each item. ``fn`` must be a
    module-level function; an exception in a worker is raised here."""
    jobs = max(1, min(jobs, len(items)))
    if jobs == 1:
        out = []
        for x in items:
            out.append(fn(x))
            if progress is not None:
                progress.update()
        return out
    from concurrent.futures import ProcessPoolExecutor

    out = []
    with ProcessPoolExecutor(jobs, mp_context=_context()) as pool:
        for result in pool.map(fn, items):
            out.append(result)
            if progress is not None:
                progress.update()
    return out
