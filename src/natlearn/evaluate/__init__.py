"""Evaluation: how well frozen features transfer, by the standard protocols, with the same code for
NAT, its baselines (random init, supervised, raw pixels), and checkpoints along a run.

Three folders: :mod:`natlearn.evaluate.probes` (the frozen-feature probes, fine-tuning and
``natlearn eval``), :mod:`natlearn.evaluate.voc` (Pascal VOC07 classification and detection,
``natlearn transfer``) and :mod:`natlearn.evaluate.reports` (compare, evolution, figures, report,
TensorBoard, embedding). What they share is here: features, the fits, the reuse key and the
uncertainty of a score. This package exports the probes' public names, imported on first use
(PEP 562): the protocol table (:mod:`natlearn.evaluate.probes.protocols`) is read without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natlearn.lazy import lazy_exports

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from natlearn.evaluate.features import extract_features, pool_conv_map
    from natlearn.evaluate.probes.finetune import finetune
    from natlearn.evaluate.probes.knn import knn_classify
    from natlearn.evaluate.probes.linear import linear_probe
    from natlearn.evaluate.probes.mlp import mlp_probe
    from natlearn.evaluate.probes.run import evaluate, format_eval, labelled_splits, write_eval
    from natlearn.evaluate.probes.scoring import (
        evaluate_handcrafted,
        evaluate_network,
        evaluate_pixels,
    )
    from natlearn.evaluate.probes.settings import EvalSettings, ProbeResult

_LAZY = {
    "EvalSettings": "natlearn.evaluate.probes.settings",
    "ProbeResult": "natlearn.evaluate.probes.settings",
    "evaluate": "natlearn.evaluate.probes.run",
    "evaluate_handcrafted": "natlearn.evaluate.probes.scoring",
    "evaluate_network": "natlearn.evaluate.probes.scoring",
    "evaluate_pixels": "natlearn.evaluate.probes.scoring",
    "extract_features": "natlearn.evaluate.features",
    "finetune": "natlearn.evaluate.probes.finetune",
    "format_eval": "natlearn.evaluate.probes.run",
    "knn_classify": "natlearn.evaluate.probes.knn",
    "labelled_splits": "natlearn.evaluate.probes.run",
    "linear_probe": "natlearn.evaluate.probes.linear",
    "mlp_probe": "natlearn.evaluate.probes.mlp",
    "pool_conv_map": "natlearn.evaluate.features",
    "write_eval": "natlearn.evaluate.probes.run",
}

__all__ = [
    "EvalSettings",
    "ProbeResult",
    "evaluate",
    "evaluate_handcrafted",
    "evaluate_network",
    "evaluate_pixels",
    "extract_features",
    "finetune",
    "format_eval",
    "knn_classify",
    "labelled_splits",
    "linear_probe",
    "mlp_probe",
    "pool_conv_map",
    "write_eval",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
