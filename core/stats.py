"""Small statistics both pipelines use: the Wilson score interval of a share."""

from __future__ import annotations

import math


def wilson_interval(count: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of `count` successes in `n` (None when n is 0): unlike the
    normal approximation it stays inside [0, 1] and is honest for small n."""
    if n <= 0:
        return None
    p = count / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n)), min(1.0, (centre + spread) / (1 + z2 / n))
