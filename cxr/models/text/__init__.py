"""Text towers: Hugging Face encoders (BERT family, or decoder LLMs made bidirectional) with pooling."""

from cxr.models.text.encoder import TextEncoder

__all__ = ["TextEncoder"]
