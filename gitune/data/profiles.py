"""Long-tail class-size profiles (docs/method.md, long-tailed data): how many training images each class keeps."""

from __future__ import annotations

import math

from gitune.config import check_value
from gitune.errors import UserError
from gitune.registry import PROFILES  # the names config checks read (re-exported)

# Guards floor() against float error when the exact value is an integer (e.g. 4800 * 10**-2 = 48).
_EPS = 1e-9


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS * max(1.0, abs(x))))


def class_counts(
    profile: str,
    num_classes: int,
    n_max: int,
    ratio: float = 100.0,
    alpha: float = 2.0,
    n_min: int = 5,
) -> list[int]:
    """Training images per class, by rank (index 0 = head).

    exp: n_max·ratio^(−i/(C−1)) (CIFAR-LT); step: half n_max, half n_max/ratio; zipf: n_max·k^(−alpha)
    floored at n_min (K49-LT); none: balanced. Values are floored like the reference code.
    """
    for key, value in (("profile", profile), ("ratio", ratio), ("alpha", alpha), ("n_min", n_min)):
        check_value(f"data.{key}", value, f"data.{key}", groups=("data",))  # the bounds of gitune.config.KEYS
    # Counts, not config keys: the source's class count and (for custom data) its largest class.
    if int(num_classes) < 1:
        raise UserError(f"data.num_classes: {num_classes!r}: expected an integer >= 1")
    if int(n_max) < 1:
        raise UserError(f"data.n_max: {n_max!r}: expected an integer >= 1")
    c, n = int(num_classes), int(n_max)
    if profile == "none" or c == 1:
        return [n] * c
    if profile == "exp":
        return [max(_floor(n * (1.0 / ratio) ** (i / (c - 1))), 1) for i in range(c)]
    if profile == "step":
        low = max(_floor(n / ratio), 1)
        return [n] * (c // 2) + [low] * (c - c // 2)
    # zipf
    return [max(_floor(n * k ** (-alpha)), int(n_min), 1) for k in range(1, c + 1)]
