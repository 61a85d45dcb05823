"""Values and languages (CIVICS): agreement log-probabilities and long-form refusals per language and topic."""
