"""Thread settings for a fit: Numba threads as asked, BLAS limited to one thread, both restored after."""

from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np
from threadpoolctl import threadpool_limits


def resolve_n_threads(n_threads: int | None) -> int:
    """The number of Numba threads a fit uses: ``None`` or ``-1`` means all that Numba may use."""
    available = numba.config.NUMBA_NUM_THREADS
    if n_threads is None or n_threads == -1:
        return available
    if not isinstance(n_threads, (int,)) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, -1 or None, got {n_threads!r}")
    return min(int(n_threads), available)


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_LIMITER = None
_WORKQUEUE_LOCK = threading.RLock()


def _enter_blas_limit():
    global _BLAS_USERS, _BLAS_LIMITER
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_LIMITER = threadpool_limits(limits=1, user_api="blas")
        _BLAS_USERS += 1


def _leave_blas_limit():
    global _BLAS_USERS, _BLAS_LIMITER
    with _BLAS_LOCK:
        _BLAS_USERS -= 1
        if _BLAS_USERS == 0 and _BLAS_LIMITER is not None:
            _BLAS_LIMITER.restore_original_limits()
            _BLAS_LIMITER = None


def _threading_layer() -> str:
    """Numba's threading layer, starting it with a tiny parallel call if it has not run yet."""
    try:
        return numba.threading_layer()
    except ValueError:
        from .kernels import spmm_rows

        # the signature of a default fit (int32 CSR indices, float32 values and factors), which needs it anyway
        out = np.zeros((1, 1), np.float32)
        spmm_rows(np.zeros(2, np.int32), np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(1, np.int64),
                  np.zeros(0, np.uint8), np.zeros((1, 1), np.float32), out, 1, 1)
        return numba.threading_layer()


@contextlib.contextmanager
def fit_threads(n_threads: int):
    """Run the body with ``n_threads`` Numba threads and single-threaded BLAS.

    The Numba kernels already use every core; a multithreaded BLAS inside them
    would oversubscribe. The caller's settings come back in ``finally``, also
    when the body raises.

    Several fits may run at once from different Python threads: Numba's thread
    count is per Python thread, and the (process-wide) BLAS limit is set by the
    first fit to start and restored by the last one to finish. Numba's
    ``workqueue`` threading layer cannot run parallel kernels from two threads
    at once; under it (only when neither OpenMP nor TBB is available) fits are
    run one after another.
    """
    before = numba.get_num_threads()
    serial = _threading_layer() == "workqueue"
    if serial:
        _WORKQUEUE_LOCK.acquire()
    _enter_blas_limit()
    try:
        numba.set_num_threads(n_threads)
        yield
    finally:
        numba.set_num_threads(before)
        _leave_blas_limit()
        if serial:
            _WORKQUEUE_LOCK.release()
