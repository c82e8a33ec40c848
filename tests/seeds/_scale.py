"""Helpers the examples use to print scale-independent numbers."""

import os

SCALE = float(os.environ.get("SEED_SCALE", "0.05"))


def secs(elapsed: float) -> str:
    """An elapsed time in the tutorial's own (unscaled) seconds, rounded."""
    return f"{round(elapsed / SCALE)}"
