"""asv: ``import fastjmt`` and the first fit's compile time, each in a fresh subprocess.

``track_cold_first_fit`` points Numba's cache at an empty folder, so every
kernel a default fit needs is compiled; ``track_warm_first_fit`` runs the same
fit again with that cache filled (what every later process on the machine
pays). Both subtract nothing: they are the wall time of a tiny fit in a new
process, which is almost all compilation or cache loading.
"""

import os
import subprocess
import sys
import tempfile

_TINY_FIT = """
import time, warnings
t0 = time.perf_counter()
import fastjmt
d = fastjmt.simulate(n_rna=200, n_atac=200, n_genes=100, n_regions=300, n_shared=3, random_state=0)
t1 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=3, max_iter=2, random_state=0)
print(time.perf_counter() - t1)
"""


def _run(code, env=None):
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    return float(out.stdout.strip().splitlines()[-1])


class Import:
    """``import fastjmt`` in a new interpreter (lazy: no NumPy, SciPy or Numba yet)."""

    def track_import_seconds(self):
        return _run("import time; t = time.perf_counter(); import fastjmt; print(time.perf_counter() - t)")

    track_import_seconds.unit = "seconds"

    def track_import_and_first_use_seconds(self):
        return _run("import time; t = time.perf_counter(); import fastjmt; fastjmt.fit; "
                    "print(time.perf_counter() - t)")

    track_import_and_first_use_seconds.unit = "seconds"


class FirstFit:
    """Wall time of a tiny fit in a new process: with an empty Numba cache (compiles) and a warm one."""

    timeout = 600

    def track_cold_first_fit(self):
        with tempfile.TemporaryDirectory(prefix="fastjmt-numba-cache-") as cache:
            return _run(_TINY_FIT, {"NUMBA_CACHE_DIR": cache})

    track_cold_first_fit.unit = "seconds"

    def track_warm_first_fit(self):
        with tempfile.TemporaryDirectory(prefix="fastjmt-numba-cache-") as cache:
            _run(_TINY_FIT, {"NUMBA_CACHE_DIR": cache})  # fills the cache
            return _run(_TINY_FIT, {"NUMBA_CACHE_DIR": cache})

    track_warm_first_fit.unit = "seconds"
