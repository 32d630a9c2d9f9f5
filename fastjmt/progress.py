"""Progress of a long fit: a progress bar on a terminal (with tqdm installed), log lines otherwise.

``verbose=0`` says nothing; ``verbose=1`` reports every ``log_every`` epochs,
``verbose=2`` every epoch. Reports go through the ``fastjmt`` logger
(:mod:`logging`); the bar, when there is one, replaces the periodic lines.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("fastjmt")


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Reports epochs of one restart."""

    def __init__(self, verbose: int, max_iter: int, log_every: int = 10, start: int = 0, bar: bool | None = None):
        self.verbose = verbose
        self.every = 1 if verbose >= 2 else log_every
        if bar is None:
            bar = verbose > 0 and _tqdm() is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.bar = _tqdm()(total=max_iter, initial=start, desc="fastjmt", unit="epoch", leave=False) if bar else None

    def update(self, it: int, terms: dict, seconds: float):
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms['total']:.5g}", refresh=False)
            return
        if it % self.every == 0 or it == 1:
            logger.info(
                "iter %4d  loss %.6g  (recon_atac %.4g, recon_rna %.4g, cos_S %.4f, cos_features %.4f, mask %.3g, "
                "entropy %.3g)  %.3fs/epoch",
                it, terms["total"], terms["recon_atac"], terms["recon_rna"], terms["cos_S"], terms["cos_features"],
                terms["mask"], terms["entropy"], seconds,
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()
