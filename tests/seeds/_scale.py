"""Helpers the examples use to print scale-independent numbers."""

import os

SCALE = float(os.environ.get("SEED_SCALE", "0.05"))


def secs(elapsed: float) -> str:
    """An elapsed time in the tutorial's own (unscaled) seconds, whole seconds.

    Floored (after a 5 % allowance for a timer firing within the clock
    resolution of its deadline), so scheduling overhead on a busy machine
    must reach a whole unscaled second before the printed value changes.
    """
    return f"{int(elapsed / SCALE + 0.05)}"
