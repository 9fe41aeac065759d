"""LLM2VEC4CXR pair data: pair records and tasks, paraphrases, the task-homogeneous sampler and DataModule."""
