"""How metrics are written for people (logs, alerts, reports): a fixed number of digits, and "n/a" where a metric is
undefined (None), such as the AUC of a slice holding one class. Standard library only: both environments use it."""

from __future__ import annotations

NOT_AVAILABLE = "n/a"


def figure(value: float | None, spec: str = ".4f") -> str:
    return NOT_AVAILABLE if value is None else format(value, spec)


def figures(metrics: dict[str, float | None], separator: str = "=") -> str:
    """`auc=0.9563, binary_accuracy=0.9432`, sorted by name."""
    return ", ".join(f"{name}{separator}{figure(value)}" for name, value in sorted(metrics.items()))
