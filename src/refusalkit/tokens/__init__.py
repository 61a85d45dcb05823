"""Refusal tokens (Jain et al. 2024): the token scheme, training data tagging, adapter training, the control
policy applied at generation time (``Policy``, ``PolicyModel``) and per-category calibration.

Submodules are imported on demand (``refusalkit.tokens.policy``, ``refusalkit.tokens.generate``, ...) so
that importing one of them does not pull in training code or torch.
"""
