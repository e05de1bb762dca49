"""How far the classes a model predicts have moved from what it predicted at validation.

The notebook writes the share of each class among the model's own predictions on the
validation split into meta.json (``REFERENCE_KEY``); the service compares the classes it
predicted over a window with it. The score is the total variation distance between the two
distributions: half the sum of the absolute differences of the shares, from 0 (the same
mix of classes) to 1 (no class in common). It reads as "the share of predictions that would
have to change class to look like validation". docs/monitoring.md says how to read it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

REFERENCE_KEY = "val_predicted_distribution"


def class_shares(counts: Mapping[str, int], labels: Sequence[str]) -> dict[str, float]:
    """Each label's share of ``counts`` (labels without a count get 0); all 0 when empty."""
    total = sum(counts.get(label, 0) for label in labels)
    return {label: (counts.get(label, 0) / total if total else 0.0) for label in labels}


def predicted_distribution(predicted: Sequence[int], labels: Sequence[str]) -> dict[str, float]:
    """The reference the notebook stores: the share of each class among ``predicted`` indices."""
    counts: dict[str, int] = {}
    for index in predicted:
        counts[labels[int(index)]] = counts.get(labels[int(index)], 0) + 1
    return {label: round(share, 6) for label, share in class_shares(counts, labels).items()}


def reference_distribution(meta: Mapping, labels: Sequence[str]) -> dict[str, float] | None:
    """The validation distribution from a model's meta.json, or None if it has none that fits."""
    reference = meta.get(REFERENCE_KEY)
    if not isinstance(reference, Mapping) or set(reference) != set(labels):
        return None
    try:
        shares = {label: float(reference[label]) for label in labels}
    except (TypeError, ValueError):
        return None
    total = sum(shares.values())
    if total <= 0 or any(share < 0 for share in shares.values()):
        return None
    return {label: share / total for label, share in shares.items()}


def drift_score(counts: Mapping[str, int], reference: Mapping[str, float]) -> float | None:
    """Total variation distance between ``counts``' class shares and ``reference``; None if no counts."""
    labels = list(reference)
    if sum(counts.get(label, 0) for label in labels) == 0:
        return None
    shares = class_shares(counts, labels)
    return round(0.5 * sum(abs(shares[label] - reference[label]) for label in labels), 6)
