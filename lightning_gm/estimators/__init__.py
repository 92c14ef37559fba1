"""Plain torch estimators (no Lightning): importance-weighted bounds, AIS, exact log Z."""

from lightning_gm.estimators.ais import (
    AISResult,
    AnnealingPath,
    GaussianRBMAnnealingPath,
    ProgressFn,
    RBMAnnealingPath,
    ais_log_partition,
    base_rate_log_odds,
    betas_schedule,
    default_betas,
    rbm_log_likelihood,
    run_ais,
    summarize_log_weights,
)
from lightning_gm.estimators.importance import IWEstimate, importance_weighted_log_prob, log_mean_exp
from lightning_gm.estimators.partition import (
    MAX_ENUMERATION_UNITS,
    EnumerationTooLargeError,
    enumerate_binary,
    iter_binary_chunks,
    log_partition_bruteforce,
    log_partition_enumerate,
    logsumexp_over_binary,
    sample_rbm_exact,
)

__all__ = [
    "IWEstimate",
    "importance_weighted_log_prob",
    "log_mean_exp",
    "AISResult",
    "AnnealingPath",
    "ProgressFn",
    "RBMAnnealingPath",
    "GaussianRBMAnnealingPath",
    "ais_log_partition",
    "base_rate_log_odds",
    "betas_schedule",
    "default_betas",
    "rbm_log_likelihood",
    "run_ais",
    "summarize_log_weights",
    "MAX_ENUMERATION_UNITS",
    "EnumerationTooLargeError",
    "enumerate_binary",
    "iter_binary_chunks",
    "log_partition_bruteforce",
    "log_partition_enumerate",
    "logsumexp_over_binary",
    "sample_rbm_exact",
]

from lightning_gm.estimators.dbm import (  # noqa: E402
    DBMAnnealingPath,
    dbm_ais_log_partition,
    dbm_log_partition_enumerate,
)

__all__ += ["DBMAnnealingPath", "dbm_ais_log_partition", "dbm_log_partition_enumerate"]
