"""Report text tools for LLM2VEC4CXR adaptation: sentence shuffle, variants, error injection, pair data."""
