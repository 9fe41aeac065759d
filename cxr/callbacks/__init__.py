"""Lightning callbacks: the embedding writer (predict)."""
