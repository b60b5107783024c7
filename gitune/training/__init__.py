"""Training pieces: losses, train rules (sampling / weighting per epoch), optimizer and LR schedule."""

from gitune.training.losses import LOSSES, build_loss, needs_cosine_head
from gitune.training.rules import RULES, effective_number_weights, rule_at_epoch
from gitune.training.schedule import build_optimizer, build_scheduler, lr_factor

__all__ = ["LOSSES", "RULES", "build_loss", "build_optimizer", "build_scheduler", "effective_number_weights",
           "lr_factor", "needs_cosine_head", "rule_at_epoch"]
