"""Language models behind one protocol: local transformers models, OpenAI-compatible endpoints."""

from refusalkit.models.base import Generation, GenerationConfig, LanguageModel, Messages
from refusalkit.models.spec import load_model

__all__ = ["Generation", "GenerationConfig", "LanguageModel", "Messages", "load_model"]
