"""refusalkit: measure, predict and control when language models refuse."""

__version__ = "0.1.0"
