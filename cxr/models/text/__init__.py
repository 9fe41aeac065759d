"""Text towers: Hugging Face encoders (BERT family, or decoder LLMs made bidirectional) with pooling."""

from cxr.models.text.encoder import TextEncoder, TokenizedText
from cxr.models.text.instructions import instruction_for_report
from cxr.models.text.lora import LoraSettings
from cxr.models.text.pooling import LatentAttentionPooling, PoolingMode
from cxr.models.text.settings import TextEncoderSettings, resolve_model_path

__all__ = ["LatentAttentionPooling", "LoraSettings", "PoolingMode", "TextEncoder", "TextEncoderSettings",
           "TokenizedText", "instruction_for_report", "resolve_model_path"]
