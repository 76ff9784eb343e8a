"""Hybrid batches for the stock ``SentenceTransformerTrainer``.

* :mod:`.modes`: the batch modes and their paper names; ``alpha`` checks;
* :mod:`.parallel`: a translation of each question (:func:`parallel_query_dataset`), for the consistency term;
* :mod:`.plan`: the pure numpy epoch planner (:func:`plan_epoch`, :class:`EpochPlan`);
* :mod:`.sampler`: :class:`HybridBatchSampler`;
* :mod:`.factory`: the factory ``HybridBatchSampler.configure(...)`` returns, :class:`SamplerConfigCallback`, and the
  writer of ``hybrid_sampler_config.json`` (``sampling.trainer``, its old name, still imports with a
  ``DeprecationWarning``);
* :mod:`.checkpoints`: :func:`save_from_main_process`, one writer per checkpoint under DDP.

The training dataset the sampler draws from (``corpus.to_dataset()``) is built in the data layer,
:mod:`sentence_transformers_hybrid.data.pair_dataset`; its names are re-exported here.
"""

from ..data.pair_dataset import PAIR_COLUMN, PairLayout, PairResolver, pair_layout, training_dataset
from .checkpoints import save_from_main_process
from .factory import CONFIG_FILE, HybridBatchSamplerFactory, SamplerConfigCallback, write_sampler_config
from .modes import DEFAULT_ALPHA, EXPERIMENT_MODES, MODES, PAPER_NAMES, describe_alpha
from .parallel import PARALLEL_QUERY_COLUMN, ParallelQueryResolver, parallel_query_dataset
from .plan import EpochPlan, plan_epoch
from .sampler import HybridBatchSampler

__all__ = [
    "PARALLEL_QUERY_COLUMN",
    "ParallelQueryResolver",
    "parallel_query_dataset",
    "CONFIG_FILE",
    "DEFAULT_ALPHA",
    "EXPERIMENT_MODES",
    "EpochPlan",
    "HybridBatchSampler",
    "HybridBatchSamplerFactory",
    "MODES",
    "PAIR_COLUMN",
    "PAPER_NAMES",
    "PairLayout",
    "PairResolver",
    "SamplerConfigCallback",
    "describe_alpha",
    "pair_layout",
    "plan_epoch",
    "save_from_main_process",
    "training_dataset",
    "write_sampler_config",
]
