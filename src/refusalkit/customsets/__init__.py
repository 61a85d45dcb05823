"""Custom over-refusal sets from a user's policy (the OVERT workflow): LLM-written seemingly-harmful but
benign prompts and harmful counterparts, an LLM audit, near-duplicate removal and per-category balancing."""

from refusalkit.customsets.pipeline import CustomSetResult, build_custom_set
from refusalkit.customsets.policy import Category, Policy, load_policy

__all__ = ["Category", "Policy", "load_policy", "build_custom_set", "CustomSetResult"]
