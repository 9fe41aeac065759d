"""sentence-transformers and plain ``transformers`` files for a text-encoder export (written by
``export_text_encoder``): the same folder then loads in ``SentenceTransformer`` and ``AutoModel`` with cxr's
embeddings.

* ``config.json`` keeps ``is_causal: false`` for a decoder made bidirectional: transformers 5 builds a
  padding-only (bidirectional) mask from it, so ``AutoModel`` and sentence-transformers (which loads ``AutoModel``)
  attend both ways without any cxr code.
* ``tokenizer_config.json`` keeps the padding side cxr uses (left for decoders).
* ``modules.json`` = Transformer + pooling. ``cls`` and ``last_token`` are sentence-transformers' own ``Pooling``
  (the first / last attended token, whatever the padding side). Every other mode (mean or weighted mean over
  the text tokens only, latent attention) is cxr's pooling shipped as ``cxr_pooling.py`` (torch only, no cxr
  import): ``SentenceTransformer(dir, trust_remote_code=True)``.
* ``config_sentence_transformers.json`` names cxr's instructions as prompts (``instruction + "; "``), with the
  encoder's default instruction as the default prompt.
* With ``pool_special_tokens`` and ``skip_instruction=False``, ``mean`` is sentence-transformers' own mean.
* Not written (cxr-only, see :func:`plain_library_support`): ``instruction_format=llm2vec`` and ``eos_token``
  pooling that appends an EOS text (the plain libraries cannot append it).
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxr.models.text.encoder import TextEncoder

ST_POOLING_FILE = "cxr_pooling.py"
ST_STANDARD_POOLING = {"cls": "cls", "last_token": "lasttoken"}


def instruction_prompt(instruction: str) -> str:
    """The string sentence-transformers prepends: cxr's ``instruction;`` followed by the space cxr puts before the
    text (``TextEncoder`` tokenises ``instruction;`` and ``" " + text`` separately; joined they give the same ids)."""
    return instruction.rstrip(";").rstrip() + "; "


def _prompts(encoder: TextEncoder) -> dict[str, str]:
    from cxr.models.text.instructions import FINDINGS_INSTRUCTION, IMPRESSION_INSTRUCTION, REPORT_INSTRUCTION

    prompts = {"report": REPORT_INSTRUCTION, "findings": FINDINGS_INSTRUCTION, "impression": IMPRESSION_INSTRUCTION}
    if encoder.instruction:
        prompts = {"default": encoder.instruction, **prompts}
    return {name: instruction_prompt(text) for name, text in prompts.items()}


def _instruction_ids(encoder: TextEncoder, prompts: dict[str, str]) -> list[list[int]]:
    tok = encoder.tokenizer
    return [tok(p.rstrip(), add_special_tokens=False)["input_ids"] for p in prompts.values()]


def plain_library_support(encoder: TextEncoder) -> str | None:
    """Why the plain libraries cannot reproduce ``encoder`` (None: they can, files are written)."""
    from cxr.models.text.instructions import InstructionFormat

    if encoder.instruction_format is not InstructionFormat.CXR:
        return (f"instruction_format={encoder.instruction_format.value}: llm2vec's joined-string input rules "
                f"(chat wrappers, separator) are cxr-only")
    if getattr(encoder, "eos_text", None):
        return (f"eos_token pooling appends {encoder.eos_text!r} to every text, which sentence-transformers "
                f"cannot do")
    return None


def pooling_module_config(encoder: TextEncoder, prompts: dict[str, str]) -> tuple[str, dict]:
    """(module type, ``1_Pooling/config.json``) for the encoder's pooling."""
    mode = "last_token" if encoder.pooling.value == "eos_token" else encoder.pooling.value  # nothing appended
    dim = int(encoder.embedding_dim)
    st_mean = mode == "mean" and encoder.pool_special_tokens and not encoder.skip_instruction
    if mode in ST_STANDARD_POOLING or st_mean:  # sentence-transformers' own convention: no remote code
        return "sentence_transformers.models.Pooling", {"word_embedding_dimension": dim,
                                                       "pooling_mode": ST_STANDARD_POOLING.get(mode, "mean"),
                                                       "include_prompt": True}
    latent = encoder.latent_pooling
    cfg = {"mode": mode, "embedding_dimension": dim, "prefix_len": len(encoder._prefix_ids),
           "suffix_len": len(encoder._suffix_ids), "skip_instruction": bool(encoder.skip_instruction),
           "pool_special_tokens": bool(encoder.pool_special_tokens),
           "instruction_ids": _instruction_ids(encoder, prompts),
           "latent_num_latents": None if latent is None else int(latent.latents.shape[0]),
           "latent_num_heads": None if latent is None else int(latent.multihead_attn.num_heads)}
    return ST_POOLING_FILE.removesuffix(".py") + ".CxrPooling", cfg


def write_interop_files(encoder: TextEncoder, out: Path) -> dict[str, str] | None:
    """Write the sentence-transformers files into the export folder ``out``; returns the ST prompts, or None
    (nothing written) when the plain libraries cannot reproduce the encoder (:func:`plain_library_support`)."""
    if plain_library_support(encoder) is not None:
        return None
    prompts = _prompts(encoder)
    module_type, pooling_cfg = pooling_module_config(encoder, prompts)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": module_type}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": int(encoder.max_length), "do_lower_case": False}, indent=2) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2) + "\n")
    st_cfg = {"prompts": prompts, "default_prompt_name": "default" if encoder.instruction else None,
              "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"}
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2) + "\n")
    if module_type.startswith(ST_POOLING_FILE.removesuffix(".py")):
        source = importlib.resources.files("cxr.models.text").joinpath("st_pooling.py").read_text()
        (out / ST_POOLING_FILE).write_text(source)
    _set_tokenizer_padding_side(out, encoder.tokenizer.padding_side)
    return prompts


def _set_tokenizer_padding_side(out: Path, side: str) -> None:
    """Make ``AutoTokenizer.from_pretrained(out)`` pad on cxr's side (transformers does not always save it)."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    cfg["padding_side"] = side
    path.write_text(json.dumps(cfg, indent=2) + "\n")
