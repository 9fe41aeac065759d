"""Keyword lexicon that assigns report sentences to anatomical regions (for anatomical partitioning)."""

from __future__ import annotations

import re
from enum import Enum


class AnatomicalRegion(str, Enum):
    """Regions a chest X-ray report sentence is about; OTHER holds technique/comparison/unclassified text."""

    DEVICES = "devices"
    PLEURA = "pleura"
    HEART_MEDIASTINUM = "heart_mediastinum"
    BONES = "bones"
    LUNGS = "lungs"
    OTHER = "other"


# Priority order matters: "ETT tip above the carina" is a device sentence although "carina" is mediastinal;
# "left pleural effusion" is pleural although it mentions a lung side.
_REGION_PATTERNS: tuple[tuple[AnatomicalRegion, re.Pattern[str]], ...] = tuple(
    (region, re.compile(r"\b(?:" + words + r")", re.IGNORECASE))
    for region, words in (
        (AnatomicalRegion.DEVICES,
         r"tubes?\b|catheters?\b|lines?\b|pacemaker|pacer|leads?\b|wires?\b|clips?\b|stents?\b|picc\b|port\b|"
         r"ett\b|ngt\b|device|drains?\b|defibrillator|valve replacement|sternotomy"),
        (AnatomicalRegion.PLEURA,
         r"pleura|effusion|pneumothora|ptx\b|pleff\b|costophrenic|cp angle|fissure|hydropneumothorax"),
        (AnatomicalRegion.HEART_MEDIASTINUM,
         r"heart|cardi|mediastin|hil(?:a|um|ar)\b|aort|pericardi|silhouette|trachea|chf\b"),
        (AnatomicalRegion.BONES,
         r"bone|osseous|ribs?\b|fracture|spine|spinal|vertebra|clavicle|scoliosis|degenerative|shoulder|"
         r"skeletal|humer"),
        (AnatomicalRegion.LUNGS,
         r"lungs?\b|pulmonary|opacit|consolidat|atelecta|pneumonia|edema|nodul|mass\b|airspace|interstitial|"
         r"lobe|ggo|ground.glass|emphysem|hyperinflat|infiltrat|congestion|lung field|rll\b|rml\b|rul\b|"
         r"lll\b|lul\b|bllf\b|rulf\b|lulf\b|rllf\b|lllf\b"),
    )
)


def classify_sentence(sentence: str) -> AnatomicalRegion:
    """The first region (in priority order) whose keywords occur in ``sentence``; OTHER when none do."""
    for region, pattern in _REGION_PATTERNS:
        if pattern.search(sentence):
            return region
    return AnatomicalRegion.OTHER
