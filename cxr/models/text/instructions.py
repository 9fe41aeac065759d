"""Instructions for the text encoder: the authors' inference rule and (instruction, text) item parsing."""

from __future__ import annotations

from dataclasses import dataclass

# upstream llm2vec separator between instruction and text inside one string (paper §A.5/§G)
INSTRUCTION_SEPARATOR = "!@#$%^&*()"

# LLM2CLIP4CXR's report instructions (llm2clip4cxr/training/data.py:127-134, paper §A.5)
REPORT_INSTRUCTION = "Retrieve the image that best matches the following report."
FINDINGS_INSTRUCTION = "Retrieve the image that best matches the following report for the findings section."
IMPRESSION_INSTRUCTION = "Retrieve the image that best matches the following report for the impression section."


def instruction_for_report(text: str) -> str:
    """The authors' rule: findings instruction if ``[FINDINGS]`` is in the text (checked first), impression
    instruction if ``[IMPRESSION]`` is, else the generic report instruction."""
    if "[FINDINGS]" in text:
        return FINDINGS_INSTRUCTION
    if "[IMPRESSION]" in text:
        return IMPRESSION_INSTRUCTION
    return REPORT_INSTRUCTION


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
