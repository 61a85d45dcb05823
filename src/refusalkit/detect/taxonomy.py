"""The response taxonomy shared by all detectors."""

from __future__ import annotations

FULL_COMPLIANCE = "full_compliance"
PARTIAL_REFUSAL = "partial_refusal"
FULL_REFUSAL = "full_refusal"
REDIRECTION = "redirection"
LABELS = (FULL_COMPLIANCE, PARTIAL_REFUSAL, FULL_REFUSAL, REDIRECTION)


def is_refusal(label: str) -> bool:
    """Return True for every taxonomy label except full compliance."""
    return label != FULL_COMPLIANCE
