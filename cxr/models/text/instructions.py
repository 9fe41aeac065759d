"""Instructions for the text encoder: the two input formats, llm2vec's per-model rules, item parsing.

Two formats exist for ``(instruction, text)`` inputs (:class:`InstructionFormat`); in both the instruction is
attended to but only the text is pooled (``skip_instruction``):

* ``cxr`` — LLM2VEC4CXR / LLM2CLIP4CXR: ``"{instruction}; " + SEPARATOR + text`` (authors' ``CXR.py`` and
  ``llm2clip4cxr/training/data.py``), i.e. the model reads ``"{instruction}; {text}"``. The released LLM2VEC4CXR
  was trained and is used this way (queries carry an instruction, documents none). The instruction and the text
  are tokenised separately, so a BPE merge across the boundary cannot shift the pooled span.
* ``llm2vec`` — upstream llm2vec (McGill-NLP/llm2vec v0.2.3, ``LLM2Vec._convert_to_str``,
  ``prepare_for_tokenization`` and ``tokenize``), reproduced exactly: ``"{instruction} " + SEPARATOR + text`` (no
  ``;``), the whole string tokenised at once and truncated at its end, the pooled span being the last
  ``len(tokenize(text))`` positions; the model-specific chat wrappers of :func:`llm2vec_prepare` apply. Use it for
  llm2vec and LLM2CLIP checkpoints (their published embeddings). llm2vec's ``doc_max_length`` word-ratio
  truncation inside ``encode`` is not reproduced (``max_length`` truncates instead).

``eos_token`` pooling appends an end-of-sequence string to the text first, in both formats, with llm2vec's
per-family rule (:func:`eos_suffix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cxr.reports.compose import FINDINGS_TAG, IMPRESSION_TAG

# upstream llm2vec separator between instruction and text inside one string (paper §A.5/§G)
INSTRUCTION_SEPARATOR = "!@#$%^&*()"

# LLM2CLIP4CXR's report instructions (llm2clip4cxr/training/data.py:127-134, paper §A.5)
REPORT_INSTRUCTION = "Retrieve the image that best matches the following report."
FINDINGS_INSTRUCTION = "Retrieve the image that best matches the following report for the findings section."
IMPRESSION_INSTRUCTION = "Retrieve the image that best matches the following report for the impression section."


def instruction_for_report(text: str) -> str:
    """The authors' rule: findings instruction if ``[FINDINGS]`` is in the text (checked first), impression
    instruction if ``[IMPRESSION]`` is, else the generic report instruction."""
    if FINDINGS_TAG in text:
        return FINDINGS_INSTRUCTION
    if IMPRESSION_TAG in text:
        return IMPRESSION_INSTRUCTION
    return REPORT_INSTRUCTION


class InstructionFormat(str, Enum):
    """How an instruction and its text are joined (module docstring): the authors' ``cxr`` form or ``llm2vec``'s."""

    CXR = "cxr"
    LLM2VEC = "llm2vec"


# llm2vec's prepare_for_tokenization (llm2vec/llm2vec.py, v0.2.3): chat wrappers keyed on the checkpoint's
# original name (config ``_name_or_path``), as (prefix, suffix) around the stripped text.
_LLAMA3_CHAT = ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>")
LLM2VEC_CHAT_WRAPPERS: dict[str, tuple[str, str]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_CHAT,
    "mistralai/Mistral-7B-Instruct-v0.2": ("[INST] ", " [/INST]"),
    "meta-llama/Llama-2-7b-chat-hf": ("[INST] ", " [/INST]"),
    "google/gemma-2-9b-it": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "Qwen/Qwen2-1.5B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
    "Qwen/Qwen2-7B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
}
#: llm2vec's end-of-sequence strings for ``eos_token`` pooling, per config class (model_type here).
LLM2VEC_EOS_BY_TYPE = {"llama": " </s>", "mistral": " </s>", "gemma": "<eos>", "qwen2": "<|endoftext|>"}


def eos_suffix(model_type: str, name_or_path: str, is_decoder: bool, tokenizer_eos: str | None) -> str | None:
    """The string ``eos_token`` pooling appends to a text (None: nothing is appended).

    llm2vec's rule: ``<|end_of_text|>`` for ``meta-llama/Meta-Llama-3-8B``, ``" </s>"`` for every other Llama or
    Mistral config, ``<eos>`` for Gemma, ``<|endoftext|>`` for Qwen2. For Llama-3 checkpoints other than that
    base model (Llama-3-Instruct, Llama-3.2, LLM2CLIP-Llama-3.2-1B, hence LLM2VEC4CXR) ``</s>`` is not a special
    token of the vocabulary: llm2vec then appends those characters as plain text, and so does this function,
    because the published embeddings were computed that way. Other decoder families (outside llm2vec) get the
    tokenizer's own EOS. Nothing is appended for BERT-style encoders (their template already ends with
    ``[SEP]``/``</s>``) or when the tokenizer has no EOS.
    """
    if name_or_path == "meta-llama/Meta-Llama-3-8B":
        return "<|end_of_text|>"
    if model_type in LLM2VEC_EOS_BY_TYPE:
        return LLM2VEC_EOS_BY_TYPE[model_type]
    return tokenizer_eos if is_decoder and tokenizer_eos else None


def llm2vec_prepare(text: str, name_or_path: str, eos: str | None) -> str:
    """llm2vec's ``prepare_for_tokenization`` on a separator-joined string (chat wrapper, then ``eos``).

    As upstream, the Meta-Llama-3-8B-Instruct wrapper returns before the EOS rule (its ``<|eot_id|>`` ends the
    text), and every rule strips the string first.
    """
    wrapper = LLM2VEC_CHAT_WRAPPERS.get(name_or_path)
    if wrapper is not None:
        text = wrapper[0] + text.strip() + wrapper[1]
        if wrapper is _LLAMA3_CHAT:
            return text
    if eos is not None:
        text = text.strip() + eos
    return text


def llm2vec_join(instruction: str, text: str) -> str:
    """llm2vec's ``_convert_to_str``: ``"{instruction} " + SEPARATOR + text``, or ``SEPARATOR + text``."""
    return f"{instruction.strip()} {INSTRUCTION_SEPARATOR}{text}" if instruction else f"{INSTRUCTION_SEPARATOR}{text}"


@dataclass(frozen=True)
class InstructedText:
    """One encoder input: an instruction (attended to, not pooled; may be empty) and the text (pooled)."""

    instruction: str
    text: str


def parse_item(item: str | tuple[str, str] | list[str], index: int, default_instruction: str | None = None
               ) -> InstructedText:
    """Turn one ``encode`` item into an ``InstructedText``.

    A plain string gets ``default_instruction``; a string containing the upstream separator is split on it;
    a pair is ``(instruction, text)``. An empty text raises ``ValueError`` naming ``index``.
    """
    if isinstance(item, str):
        if INSTRUCTION_SEPARATOR in item:
            instruction, text = item.split(INSTRUCTION_SEPARATOR, 1)
        else:
            instruction, text = default_instruction or "", item
    elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        instruction, text = item
    else:
        raise TypeError(f"text {index}: expected a str or an (instruction, text) pair, got {type(item).__name__}")
    if not text.strip():
        raise ValueError(f"text {index} is empty; refusing to embed an instruction/pad-only sequence")
    return InstructedText(instruction=instruction.strip(), text=text.strip())
