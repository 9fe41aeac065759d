"""The 14 CheXpert observations and their four label states.

Loaders keep all four states (positive / negative / uncertain / not mentioned); mapping uncertain labels to
positive or negative is a policy applied only by metrics and losses (:func:`binarize`), never by a loader.
"""

from __future__ import annotations

import math
from enum import Enum, IntEnum
from typing import Any

import numpy as np

#: The 14 observations in the column order of the MIMIC-CXR chexpert/negbio CSVs (alphabetical).
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
NUM_OBSERVATIONS = len(CHEXPERT_OBSERVATIONS)
OBSERVATION_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHEXPERT_OBSERVATIONS)}


class LabelState(IntEnum):
    """One observation's state. Stored as int8 in label vectors."""

    POSITIVE = 1
    NEGATIVE = 0
    UNCERTAIN = -1
    NOT_MENTIONED = -2  # a blank cell in the CheXpert/NegBio CSVs


class UncertainPolicy(str, Enum):
    """How metrics map UNCERTAIN labels (CheXpert's U-zeros / U-ones / U-ignore)."""

    ZEROS = "zeros"
    ONES = "ones"
    IGNORE = "ignore"


class LabelValueError(ValueError):
    """A label cell holds a value outside the four states."""


def parse_label_value(value: Any) -> LabelState:
    """Map a raw cell (1/1.0/"1.0", 0, -1, blank/None/NaN) to a :class:`LabelState`.

    Raises :class:`LabelValueError` for anything else (e.g. ``2`` or ``"yes"``).
    """
    if value is None:
        return LabelState.NOT_MENTIONED
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in {"nan", "none", "null"}:
            return LabelState.NOT_MENTIONED
        try:
            value = float(text)
        except ValueError as err:
            raise LabelValueError(f"label value {value!r} is not one of 1, 0, -1 or blank") from err
    if isinstance(value, (bool, np.bool_)):
        raise LabelValueError(f"label value {value!r} is not one of 1, 0, -1 or blank")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, (float, np.floating)) and math.isnan(float(value)):
            return LabelState.NOT_MENTIONED
        if float(value) in (1.0, 0.0, -1.0):
            return LabelState(int(value))
    raise LabelValueError(f"label value {value!r} is not one of 1, 0, -1 or blank")


def empty_labels() -> np.ndarray:
    """A label vector with every observation NOT_MENTIONED."""
    return np.full(NUM_OBSERVATIONS, LabelState.NOT_MENTIONED, dtype=np.int8)


def labels_from_mapping(values: dict[str, Any]) -> np.ndarray:
    """Build an int8 label vector from ``{observation name: raw value}``; missing names stay NOT_MENTIONED."""
    out = empty_labels()
    for name, raw in values.items():
        if name not in OBSERVATION_INDEX:
            raise KeyError(f"unknown CheXpert observation {name!r}")
        out[OBSERVATION_INDEX[name]] = parse_label_value(raw)
    return out


def binarize(labels: np.ndarray | Any, policy: UncertainPolicy | str = UncertainPolicy.ZEROS):
    """Map four-state labels (..., 14) to ``(positive, valid)`` boolean arrays.

    NOT_MENTIONED and NEGATIVE are negative. UNCERTAIN follows ``policy``; under ``ignore`` it is marked
    invalid (``valid`` False) so metrics can leave it out. Works on numpy arrays and torch tensors.
    """
    policy = UncertainPolicy(policy)
    positive = labels == LabelState.POSITIVE
    uncertain = labels == LabelState.UNCERTAIN
    if policy is UncertainPolicy.ONES:
        positive = positive | uncertain
    valid = ~uncertain if policy is UncertainPolicy.IGNORE else (labels == labels)
    return positive, valid
