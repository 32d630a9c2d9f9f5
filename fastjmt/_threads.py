"""Thread settings for a fit: Numba threads as asked, BLAS limited to one thread, both restored after."""

from __future__ import annotations

import contextlib
import os

import numba
from threadpoolctl import threadpool_limits


def resolve_n_threads(n_threads: int | None) -> int:
    """The number of Numba threads a fit uses: ``None`` or ``-1`` means all that Numba may use."""
    available = numba.config.NUMBA_NUM_THREADS
    if n_threads is None or n_threads == -1:
        return available
    if not isinstance(n_threads, (int,)) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, -1 or None, got {n_threads!r}")
    return min(int(n_threads), available)


@contextlib.contextmanager
def fit_threads(n_threads: int):
    """Run the body with ``n_threads`` Numba threads and single-threaded BLAS.

    The Numba kernels already use every core; a multithreaded BLAS inside them
    would oversubscribe. The caller's settings come back in ``finally``, also
    when the body raises.
    """
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(n_threads)
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(before)


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
