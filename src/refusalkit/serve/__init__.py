"""An OpenAI-compatible HTTP server over any local model (``refusalkit serve``)."""
