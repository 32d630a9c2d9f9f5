"""The package's exceptions and warnings, in one place."""


class NonFiniteError(FloatingPointError):
    """A factor became NaN or infinite during a fit."""


class ConvergenceWarning(UserWarning):
    """The fit stopped at ``max_iter`` before it converged (see ``stop`` in :func:`fastjmt.fit`)."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, another format, or made for other data or options."""


class LinkCoverageWarning(UserWarning):
    """Few RNA genes or ATAC regions have a gene activity link: the modalities are barely bridged."""
