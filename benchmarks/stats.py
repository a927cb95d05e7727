"""Percentile summaries printed by every benchmark."""

from __future__ import annotations

import numpy as np


def summary(values: list[float]) -> dict[str, float]:
    """N / min / p50 / p90 / max."""
    a = np.asarray(values, dtype=float)
    return {
        "n": len(a),
        "min": float(a.min()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
    }


def fmt(name: str, values: list[float], unit: str = "ms", decimals: int = 1) -> str:
    s = summary(values)
    p50, p90, top = (f"{s[k]:>8.{decimals}f} {unit}" for k in ("p50", "p90", "max"))
    return f"{name:<40} p50 {p50}   p90 {p90}   max {top}   (n={s['n']})"
