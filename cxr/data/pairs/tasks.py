"""Pair tasks and their instructions (paper §A.5, with full instructions instead of the fork's 1-char bug).

Two instruction sets: the project's full sentences (``TASK_SPECS``, default) and the authors' strings verbatim
(``AUTHORS_INSTRUCTIONS``); :class:`InstructionSet` chooses, e.g. ``PairDataModule(instruction_set=AUTHORS)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PairTask(str, Enum):
    """Closed set of contrastive pair tasks. Aliases ``cxr``/``cxr2``/``cxr3`` are the authors' CSV tags."""

    VARIANT = "variant"
    SUMMARIZE = "summarize"
    CLASSIFY = "classify"

    @classmethod
    def parse(cls, value: str) -> PairTask:
        key = str(value).strip().lower()
        aliases = {"cxr": cls.VARIANT, "cxr2": cls.SUMMARIZE, "cxr3": cls.CLASSIFY}
        if key in aliases:
            return aliases[key]
        try:
            return cls(key)
        except ValueError:
            names = ", ".join([t.value for t in cls] + list(aliases))
            raise ValueError(f"unknown pair task {value!r} (expected one of {names})") from None


@dataclass(frozen=True)
class TaskSpec:
    """A task's query-side instruction and whether query/positive are interchangeable.

    Symmetric tasks swap query and positive at random during training (the authors' ``cxr`` task). An asymmetric
    task with a ``reverse_instruction`` is also trained the other way round (positive as query under that
    instruction, see ``PairDataset.reverse_prob``), so adaptation does not trade one direction for the other.
    """

    name: PairTask
    instruction: str
    symmetric: bool
    reverse_instruction: str | None = None


TASK_SPECS: dict[PairTask, TaskSpec] = {
    PairTask.VARIANT: TaskSpec(PairTask.VARIANT, "Retrieve a chest X-ray report that is clinically equivalent "
                               "to the given report", symmetric=True),
    PairTask.SUMMARIZE: TaskSpec(PairTask.SUMMARIZE, "Given the findings of a chest X-ray report, retrieve its "
                                 "impression", symmetric=False,
                                 reverse_instruction="Given the impression of a chest X-ray report, retrieve its "
                                 "findings"),
    PairTask.CLASSIFY: TaskSpec(PairTask.CLASSIFY, "Given a chest X-ray report, retrieve the statement of its "
                                "findings and normal observations", symmetric=False,
                                reverse_instruction="Given a statement of chest X-ray findings, retrieve the "
                                "report"),
}


class InstructionSet(str, Enum):
    """Which query instructions the pair tasks use: the project's (``TASK_SPECS``) or the authors' verbatim."""

    PROJECT = "project"
    AUTHORS = "authors"


#: The authors' ``CXR_EMBEDDING_PROMPTS`` (their LLM2CLIP fork, ``llm_caption_contrastive/dataset/CXR.py``)
#: verbatim, the "give" typo included: these exact strings are what their model saw (full strings, not the fork's
#: one-character indexing bug).
AUTHORS_INSTRUCTIONS: dict[PairTask, str] = {
    PairTask.VARIANT: "Retrieve semantically similar sentences",
    PairTask.SUMMARIZE: "Summarize the give findings",
    PairTask.CLASSIFY: "Classify the given report",
}


def task_instruction(task: PairTask, instruction_set: InstructionSet = InstructionSet.PROJECT) -> str:
    """The query-side instruction of ``task`` in ``instruction_set``."""
    if InstructionSet(instruction_set) is InstructionSet.AUTHORS:
        return AUTHORS_INSTRUCTIONS[task]
    return TASK_SPECS[task].instruction
