"""Plain torch estimators (no Lightning): importance-weighted bounds, AIS, exact log Z."""

from lightning_gm.estimators.ais import (
    AISResult,
    AISSchedule,
    AnnealingPath,
    LastStateCache,
    ProgressFn,
    ais_log_partition,
    base_rate_log_odds,
    betas_schedule,
    default_betas,
    run_ais,
    summarize_log_weights,
)
from lightning_gm.estimators.rbm_ais import GaussianRBMAnnealingPath, RBMAnnealingPath, rbm_log_likelihood
from lightning_gm.estimators.importance import IWEstimate, importance_weighted_log_prob, log_mean_exp
from lightning_gm.estimators.partition import (
    MAX_ENUMERATION_UNITS,
    EnumerationTooLargeError,
    base_parameter,
    check_enumerable,
    enumerate_binary,
    frozen_copy,
    iter_binary_chunks,
    log_partition_bruteforce,
    log_partition_enumerate,
    logsumexp_over_binary,
    sample_rbm_exact,
)
from lightning_gm.estimators.dbm import DBMAnnealingPath, dbm_log_partition_enumerate
from lightning_gm.estimators.sample_quality import (
    PrecisionRecall,
    frechet_distance,
    frechet_metric,
    knn_radii,
    manifold_coverage,
    precision_recall,
)
from lightning_gm.estimators.mmd import DEFAULT_BANDWIDTHS, gaussian_kernel_mixture, mmd2, squared_distances
from lightning_gm.estimators.rbm_variants import (
    SpikeSlabAnnealingPath,
    SubspaceRBMAnnealingPath,
    ssrbm_log_partition_enumerate,
    subspace_rbm_log_partition_enumerate,
)
from lightning_gm.estimators.conv_rbm import ConvRBMAnnealingPath, conv_rbm_log_partition_enumerate
from lightning_gm.estimators.decoder_ais import (
    DecoderAISResult,
    HMCAnnealing,
    bernoulli_observation,
    decoder_ais_log_prob,
    gaussian_observation,
    sigmoid_schedule,
)
from lightning_gm.estimators.reverse import Bracket, RAISEResult, ReverseStart, raise_log_prob

__all__ = [
    "IWEstimate", "importance_weighted_log_prob", "log_mean_exp", "AISResult", "AISSchedule", "AnnealingPath",
    "LastStateCache", "ProgressFn", "RBMAnnealingPath", "GaussianRBMAnnealingPath", "ais_log_partition",
    "base_rate_log_odds", "betas_schedule", "default_betas", "rbm_log_likelihood", "run_ais", "summarize_log_weights",
    "MAX_ENUMERATION_UNITS", "EnumerationTooLargeError", "base_parameter", "check_enumerable", "enumerate_binary",
    "frozen_copy", "iter_binary_chunks", "log_partition_bruteforce", "log_partition_enumerate",
    "logsumexp_over_binary", "sample_rbm_exact", "DBMAnnealingPath", "dbm_log_partition_enumerate", "PrecisionRecall",
    "frechet_distance", "frechet_metric", "knn_radii", "manifold_coverage", "precision_recall", "DEFAULT_BANDWIDTHS",
    "gaussian_kernel_mixture", "mmd2", "squared_distances", "SpikeSlabAnnealingPath", "SubspaceRBMAnnealingPath",
    "ssrbm_log_partition_enumerate", "subspace_rbm_log_partition_enumerate", "ConvRBMAnnealingPath",
    "conv_rbm_log_partition_enumerate", "DecoderAISResult", "HMCAnnealing", "decoder_ais_log_prob",
    "gaussian_observation", "bernoulli_observation", "sigmoid_schedule", "Bracket", "RAISEResult", "ReverseStart",
    "raise_log_prob",
]
