"""A text-only corpus of realistic synthetic reports, with per-sentence facts (no images are rendered).

``python -m cxr.data.synthetic.corpus --out DIR --num-reports 3000 --seed 0`` writes

* ``DIR/reports.csv``: ``study_id, patient_id, split, style, findings, impression, report`` and the 14 CheXpert
  label columns — a report manifest that ``records_from_report_manifest`` (pair building) reads;
* ``DIR/report_facts.jsonl``: one object per study, ``{"study_id", "style", "sentences": [{"section", "text",
  "facts": [...]}]}`` — the truth each sentence was written with (:class:`cxr.reports.facts.Fact` as JSON).

The reports are the nine styles of :mod:`cxr.data.synthetic.realistic`; :func:`realistic_corpus` and
:func:`corpus_records` give the same corpus in memory (the property tests and the adaptation measurement use them).
Prints counts only, never report text.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cxr.data.synthetic.layouts.files import write_csv
from cxr.data.synthetic.world import ReportStyleMix, SyntheticStudy, sample_world
from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState
from cxr.records import ReportSections, StudyRecord

CORPUS_COLUMNS = ("study_id", "patient_id", "split", "style", "findings", "impression", "report",
                  *CHEXPERT_OBSERVATIONS)


def realistic_corpus(num_reports: int, seed: int = 0) -> list[SyntheticStudy]:
    """``num_reports`` studies whose reports are written in the realistic styles (deterministic per seed)."""
    return sample_world(num_reports, seed=seed, report_styles=ReportStyleMix.REALISTIC)


def corpus_records(studies: Sequence[SyntheticStudy], source: str = "synthetic-realistic") -> list[StudyRecord]:
    """Text-and-label study records (no images) of a corpus, for pair building and text benchmarks."""
    return [StudyRecord(study_id=s.study_id, patient_id=s.patient_id, split=s.split, images=(),
                        report=ReportSections(s.findings_text, s.impression_text, s.report_text),
                        labels=s.labels, source=source) for s in studies]


def facts_json(study: SyntheticStudy) -> dict:
    """The study's sentences with their sections and facts, JSON-ready."""
    return {"study_id": study.study_id, "style": study.style.value,
            "sentences": [{"section": m.section.value, "text": m.sentence,
                           "facts": [f.to_json() for f in m.facts]} for m in study.mentions]}


def write_corpus(out_dir: str | Path, studies: Sequence[SyntheticStudy]) -> tuple[Path, Path]:
    """Write ``reports.csv`` and ``report_facts.jsonl`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in studies:
        labels = [None if int(v) == LabelState.NOT_MENTIONED else str(int(v)) for v in s.labels]
        rows.append([s.study_id, s.patient_id, s.split.value, s.style.value, s.findings_text, s.impression_text,
                     s.report_text, *labels])
    csv_path = write_csv(out / "reports.csv", CORPUS_COLUMNS, rows)
    jsonl = out / "report_facts.jsonl"
    with jsonl.open("w", encoding="utf-8", newline="\n") as fh:
        for s in studies:
            fh.write(json.dumps(facts_json(s), sort_keys=True) + "\n")
    return csv_path, jsonl


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m cxr.data.synthetic.corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    studies = realistic_corpus(args.num_reports, args.seed)
    csv_path, jsonl = write_corpus(args.out, studies)
    styles = Counter(s.style.value for s in studies)
    print(f"wrote {len(studies)} reports to {csv_path} and {jsonl}")
    for style, n in sorted(styles.items()):
        print(f"  {style:16s} {n:6d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
