"""Importers for the authors' released weights (Ko et al. 2025).

- :mod:`cxr.models.importers.llm2vec4cxr`: the HF ``lukeingawesome/llm2vec4cxr`` text encoder → a ``cxr`` export.
- :mod:`cxr.models.importers.llm2clip4cxr`: ``llm2clip4cxr.bin`` (EVA02-CLIP-L/14 + LLM2VEC4CXR LoRA + projection)
  → a ``CLIPAlignModule`` checkpoint that ``eval.py`` evaluates.

Every source key is accounted for (:class:`~cxr.models.importers.common.ImportReport`); a key without a rule is
an error.
"""
