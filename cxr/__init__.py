"""cxr: chest X-ray vision-language learning with LLM text encoders, on PyTorch Lightning."""

__version__ = "0.1.0"
