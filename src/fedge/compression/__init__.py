"""Compression passes over the IR, each with its measured size and accuracy cost.

>>> from fedge.compression import ModelQuantizer, QuantizationStrategy
>>> q = ModelQuantizer(QuantizationStrategy.INT8)     # doctest: +SKIP
>>> small = q.quantize_model(fitted_estimator)        # doctest: +SKIP
>>> q.get_model_size(small)                           # doctest: +SKIP
"""

from fedge.compression.accounting import evaluate, lite_bytes, model_size, pickle_bytes
from fedge.compression.distillation import (
    DistillationReport,
    KnowledgeDistiller,
    munge,
    soften,
    student_from_spec,
)
from fedge.compression.pruning import (
    ModelPruner,
    PruningMethod,
    PruningReport,
    polynomial_sparsity,
)
from fedge.compression.quantization import (
    ModelQuantizer,
    QuantizationReport,
    QuantizationStrategy,
    quantize_trees,
    quantize_weights,
)
from fedge.compression.search import Candidate, SearchResult, auto_compress

__all__ = [
    "Candidate",
    "DistillationReport",
    "KnowledgeDistiller",
    "ModelPruner",
    "ModelQuantizer",
    "PruningMethod",
    "PruningReport",
    "QuantizationReport",
    "QuantizationStrategy",
    "SearchResult",
    "auto_compress",
    "evaluate",
    "lite_bytes",
    "model_size",
    "munge",
    "pickle_bytes",
    "polynomial_sparsity",
    "quantize_trees",
    "quantize_weights",
    "soften",
    "student_from_spec",
]
