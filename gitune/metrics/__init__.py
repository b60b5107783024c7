"""Evaluation metrics: accuracy by class and shot group; invariance (eKLD, consistency)."""

from gitune.metrics.accuracy import (SHOT_GROUPS, class_key, classification_metrics, per_class_accuracy,
                                     shot_groups)
from gitune.metrics.invariance import kl_divergence, measure_invariance, per_class_means, spearman

__all__ = ["SHOT_GROUPS", "class_key", "classification_metrics", "kl_divergence", "measure_invariance",
           "per_class_accuracy", "per_class_means", "shot_groups", "spearman"]
