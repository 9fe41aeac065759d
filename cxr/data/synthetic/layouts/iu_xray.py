"""Layout ``iu-xray``: the R2Gen-style ``iu_xray`` folder used by report-generation work (datasets.md §8.2).

Files::

    annotation.json                     {"train": [...], "val": [...], "test": [...]}
    images/CXR<n>_IM-<ssss>/0.png, 1.png ...   8-bit PNGs, one folder per study

Each item is ``{"id": "CXR<n>_IM-<ssss>", "report": "...", "image_path": ["CXR<n>_IM-<ssss>/0.png", ...],
"split": "train"}``. The report is one string without section headers: the findings followed by the impression
(the impression alone for impression-only reports), ``XXXX`` de-identification. Splits are the world's
(patient-level); study and patient id = the item id (R2Gen's IU folder has no patient ids).
"""

from __future__ import annotations

import json
from pathlib import Path

from cxr.data.synthetic.layouts.files import layout_rng, render_views, write_png
from cxr.data.synthetic.layouts.openi import _deid
from cxr.data.synthetic.truth import TruthRecord, TruthView

ANNOTATION_NAME = "annotation.json"
IMAGES_DIR = "images"
SPLIT_KEYS = ("train", "val", "test")


def r2gen_report(study) -> str:
    """Findings then impression in one unmarked string, as R2Gen's annotation stores IU reports."""
    parts = [_deid(t) for t in (study.findings_text, study.impression_text) if t]
    return " ".join(parts)


def write_iu_xray_layout(out_dir: Path, studies: list, image_size: int) -> list[TruthRecord]:
    """Write ``annotation.json`` and ``images/<id>/<k>.png``; returns the truth records."""
    annotation: dict[str, list] = {key: [] for key in SPLIT_KEYS}
    truth = []
    for uid, study in enumerate(studies, 1):
        series = int(layout_rng(study, 41).integers(1, 9999))
        item_id = f"CXR{uid}_IM-{series:04d}"
        paths = [f"{item_id}/{k}.png" for k in range(len(study.views))]
        for rel, img in zip(paths, render_views(study, image_size), strict=True):
            write_png(out_dir / IMAGES_DIR / rel, img, bits=8)
        report = r2gen_report(study)
        split = study.split.value
        annotation[split].append({"id": item_id, "report": report, "image_path": paths, "split": split})
        views = tuple(TruthView(f"{item_id}/{k}", "UNKNOWN", f"{IMAGES_DIR}/{rel}") for k, rel in enumerate(paths))
        # R2Gen keeps no sections: the truth stores the one string as "findings" (what the source reads as text).
        truth.append(TruthRecord(study_id=item_id, patient_id=item_id, split=split, views=views,
                                 findings_text=report, impression_text=None,
                                 labels=tuple(int(v) for v in study.labels), layout="iu-xray",
                                 world_study_id=study.study_id))
    (out_dir / ANNOTATION_NAME).write_text(json.dumps(annotation, indent=1) + "\n", encoding="utf-8")
    return truth
