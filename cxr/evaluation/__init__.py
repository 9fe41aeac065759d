"""``eval.py``'s engine: multi-dataset retrieval evaluation, result tables, top-1 dumps, text benchmarks,
zero-shot classification."""
