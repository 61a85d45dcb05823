"""Prompt-level refusal prediction: the probability that a target model refuses a prompt, before it
generates anything (Reuter & Schulze 2023), and the bootstrapping pipeline that trains one for any model."""

from refusalkit.predict.prompt_model import PromptClassifier, get_predictor

__all__ = ["PromptClassifier", "get_predictor"]
