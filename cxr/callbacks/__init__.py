"""Lightning callbacks: embedding writer (predict) and inference export."""
