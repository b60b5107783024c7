"""Evaluation metrics: accuracy by class and shot group; invariance (eKLD, consistency, G-EED, ratio);
generator fidelity (style effect, content, energy distance to the true nuisance)."""

from gitune.metrics.accuracy import (SHOT_GROUPS, class_key, classification_metrics, per_class_accuracy,
                                     shot_groups)
from gitune.metrics.geed import (PENULTIMATE, derangement, latent_geed, measure_extra_invariance, pair_distances,
                                 representation_ratio, softmax_geed, softmax_geed_from_log_probs)
from gitune.metrics.generator_fidelity import identity_synthesizer, measure_fidelity, nuisance_synthesizer
from gitune.metrics.invariance import kl_divergence, measure_invariance, per_class_means, spearman

__all__ = ["PENULTIMATE", "SHOT_GROUPS", "class_key", "classification_metrics", "derangement",
           "identity_synthesizer", "kl_divergence", "latent_geed", "measure_extra_invariance", "measure_fidelity",
           "measure_invariance",
           "nuisance_synthesizer", "pair_distances", "per_class_accuracy", "per_class_means", "representation_ratio",
           "shot_groups", "softmax_geed", "softmax_geed_from_log_probs", "spearman"]
