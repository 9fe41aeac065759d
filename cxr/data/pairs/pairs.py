"""Contrastive pair data for LLM2VEC4CXR adaptation: the ``PairRecord`` type, CSV I/O and pair building.

Pairs come from a CSV (columns ``query``, ``positive``, optional ``negative``, ``task``; the authors'
``caption1``/``caption2``/``neg``/``train`` names are accepted too) or are built from any source's
:class:`~cxr.records.StudyRecord`s:

* findings → impression (task ``summarize``), hard negative = impression with one injected error;
* report ↔ rule-based variant (task ``variant``), hard negative = report with one injected error;
* report → label sentence (task ``classify``), hard negative = label sentence with one observation flipped.

Command line (writes a pairs CSV from a report manifest, e.g. the synthetic world's ``manifest.csv``)::

    python -m cxr.data.pairs.pairs --manifest data/manifest.csv --out pairs.csv --seed 0 --split train
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.data.pairs.tasks import PairTask
from cxr.labels import CHEXPERT_OBSERVATIONS, labels_from_mapping
from cxr.records import ReportSections, Split, StudyRecord
from cxr.reports.compose import compose_report_text, empty_report_reason, normalize_whitespace
from cxr.reports.errors import inject_error
from cxr.reports.label_text import flipped_label_sentence, label_sentence
from cxr.reports.variants import ReportVariant, VariantKind, make_variants

PAIR_COLUMNS = ("query", "positive", "negative", "task")
_COLUMN_ALIASES = {"caption1": "query", "caption2": "positive", "neg": "negative", "train": "task"}
# The authors' CSV writes '-1' for "no hard negative".
_NO_NEGATIVE = {"", "-1", "nan", "none"}
#: Variants that rewrite the whole report with the same content (the authors' ``cxr`` rewrite pairs).
REWRITE_KINDS = frozenset({VariantKind.ABBREVIATION_EXPANSION, VariantKind.ABBREVIATION_CONTRACTION,
                           VariantKind.PARAPHRASE})


class PairDataError(ValueError):
    """A pairs file is malformed (missing column, empty cell, unknown task); the message names file and row."""


@dataclass(frozen=True)
class PairRecord:
    """One training pair: query, its positive, an optional hard negative, and the task it belongs to."""

    query: str
    positive: str
    negative: str | None
    task: PairTask


def read_pairs_csv(path: str | Path) -> list[PairRecord]:
    """Read a pairs CSV; raises :class:`PairDataError` naming the file, row (1-based data row) and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [_COLUMN_ALIASES.get(h.strip(), h.strip()) for h in (reader.fieldnames or [])]
        missing = [c for c in ("query", "positive", "task") if c not in header]
        if missing:
            raise PairDataError(f"{path}: missing column(s) {missing}; found {header}")
        reader.fieldnames = header
        out: list[PairRecord] = []
        for row_no, row in enumerate(reader, start=1):
            cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
            for col in ("query", "positive", "task"):
                if not cells.get(col):
                    raise PairDataError(f"{path}: row {row_no}: empty {col!r}")
            try:
                task = PairTask.parse(cells["task"])
            except ValueError as err:
                raise PairDataError(f"{path}: row {row_no}: {err}") from None
            neg = cells.get("negative", "")
            out.append(PairRecord(cells["query"], cells["positive"],
                                  None if neg.lower() in _NO_NEGATIVE else neg, task))
    if not out:
        raise PairDataError(f"{path}: no pairs")
    return out


def write_pairs_csv(pairs: Iterable[PairRecord], path: str | Path) -> int:
    """Write pairs atomically (temp file + rename); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(PAIR_COLUMNS)
            for p in pairs:
                writer.writerow([p.query, p.positive, p.negative or "", p.task.value])
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


@dataclass(frozen=True)
class PairBuildOptions:
    """What :func:`build_pairs` makes. ``variants_per_report`` caps variant pairs per study; ``variant_kinds``
    picks the rule-based variants (``None``: all of them); ``rewrite_first`` takes one abbreviation rewrite
    (expansion or contraction, :data:`REWRITE_KINDS`) first whenever one applies, the rest at random."""

    tasks: tuple[PairTask, ...] = (PairTask.VARIANT, PairTask.SUMMARIZE, PairTask.CLASSIFY)
    variants_per_report: int = 2
    variant_kinds: tuple[VariantKind, ...] | None = None
    hard_negatives: bool = True
    tagged_reports: bool = True
    rewrite_first: bool = True


def pick_variants(variants: Sequence[ReportVariant], k: int, rewrite_first: bool = True) -> list[ReportVariant]:
    """The first ``k`` of ``variants`` (already in random order); with ``rewrite_first`` the first rewrite
    (:data:`REWRITE_KINDS`) leads whenever there is one.

    Why: the authors' main ``cxr`` pair is (report, its rewrite with the abbreviations written out; paper §B.1).
    Drawn like any other kind, too few rewrites were left to learn the abbreviations, and the adapted MiniLM
    retrieved abbreviated reports worse than the unadapted one (docs/llm2vec4cxr.md, "every text benchmark").
    """
    order = list(variants)
    if rewrite_first:
        rewrite = next((v for v in order if v.kind in REWRITE_KINDS), None)
        if rewrite is not None:
            order.remove(rewrite)
            order.insert(0, rewrite)
    return order[:max(k, 0)]


def pairs_for_study(record: StudyRecord, rng: random.Random, options: PairBuildOptions) -> list[PairRecord]:
    """The pairs one study yields (possibly none, e.g. no impression for ``summarize``)."""
    out: list[PairRecord] = []
    rep = record.report
    findings = normalize_whitespace(rep.findings) if rep.findings and rep.findings.strip() else None
    impression = normalize_whitespace(rep.impression) if rep.impression and rep.impression.strip() else None
    try:
        report = compose_report_text(rep, tagged=options.tagged_reports)
    except ValueError:
        return out  # no text at all: nothing to pair (callers count these)

    def negative_for(text: str, context: str | None = None) -> str | None:
        if not options.hard_negatives:
            return None
        err = inject_error(text, rng, context=context)
        return err.text if err else None

    if PairTask.SUMMARIZE in options.tasks and findings and impression:
        # the corrupted impression must contradict the findings (no device or finding the findings state)
        out.append(PairRecord(findings, impression, negative_for(impression, findings), PairTask.SUMMARIZE))
    if PairTask.VARIANT in options.tasks and options.variants_per_report > 0:
        variants = make_variants(report, rng, options.variant_kinds)
        rng.shuffle(variants)
        for v in pick_variants(variants, options.variants_per_report, options.rewrite_first):
            out.append(PairRecord(report, v.text, negative_for(report), PairTask.VARIANT))
    if PairTask.CLASSIFY in options.tasks:
        sentence = label_sentence(record.labels)
        if sentence:
            neg = flipped_label_sentence(record.labels, rng) if options.hard_negatives else None
            out.append(PairRecord(report, sentence, neg, PairTask.CLASSIFY))
    return out


def build_pairs(records: Iterable[StudyRecord], seed: int = 0,
                options: PairBuildOptions | None = None) -> list[PairRecord]:
    """Pairs from study records, deterministic for a given ``seed`` and record order.

    Each study draws from its own RNG seeded by ``(seed, study key)``, so adding studies does not change the
    pairs of the others.
    """
    options = options or PairBuildOptions()
    out: list[PairRecord] = []
    for record in records:
        rng = random.Random(f"{seed}:{record.key}")
        out.extend(pairs_for_study(record, rng, options))
    return out


def records_from_report_manifest(path: str | Path, split: Split | None = None) -> list[StudyRecord]:
    """Study records (text and labels only, no images) from a manifest CSV.

    Needs ``findings`` and/or ``impression`` (or ``report``) columns; optional ``study_id``, ``patient_id``,
    ``split`` and the 14 CheXpert label columns. Rows without any text raise, naming the row.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not {"findings", "impression", "report"} & set(header):
            raise PairDataError(f"{path}: needs a 'findings', 'impression' or 'report' column; found {header}")
        label_cols = [c for c in CHEXPERT_OBSERVATIONS if c in header]
        records: dict[str, StudyRecord] = {}
        for row_no, row in enumerate(reader, start=1):
            row = {(k or "").strip(): (v or "") for k, v in row.items()}
            study_id = row.get("study_id", "").strip() or f"row{row_no}"
            if study_id in records:
                continue  # one row per image: the study's text repeats
            row_split = Split.parse(row["split"]) if row.get("split", "").strip() else Split.TRAIN
            if split is not None and row_split is not split:
                continue
            report = ReportSections(findings=row.get("findings") or None, impression=row.get("impression") or None,
                                    full_text=row.get("report", ""))
            empty = "no report text" if report.is_empty else empty_report_reason(report)
            if empty:
                raise PairDataError(f"{path}: row {row_no} (study {study_id}): {empty}")
            try:
                labels = labels_from_mapping({c: row.get(c, "") for c in label_cols})
            except ValueError as err:
                raise PairDataError(f"{path}: row {row_no} (study {study_id}): {err}") from None
            records[study_id] = StudyRecord(study_id=study_id, patient_id=row.get("patient_id", "") or study_id,
                                            split=row_split, images=(), report=report, labels=labels,
                                            source=path.stem)
    return list(records.values())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cxr.data.pairs.pairs --manifest M.csv --out pairs.csv``: build and write pairs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="CSV with findings/impression (or report) columns")
    parser.add_argument("--out", required=True, help="pairs CSV to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default=None, help="keep only this split (train/val/test)")
    parser.add_argument("--tasks", default="variant,summarize,classify")
    parser.add_argument("--variants-per-report", type=int, default=2)
    parser.add_argument("--no-hard-negatives", action="store_true")
    parser.add_argument("--no-rewrite-first", action="store_true",
                        help="draw every variant kind alike (default: one abbreviation rewrite per report first)")
    args = parser.parse_args(argv)
    records = records_from_report_manifest(args.manifest, Split.parse(args.split) if args.split else None)
    options = PairBuildOptions(tasks=tuple(PairTask.parse(t) for t in args.tasks.split(",") if t.strip()),
                               variants_per_report=args.variants_per_report,
                               hard_negatives=not args.no_hard_negatives,
                               rewrite_first=not args.no_rewrite_first)
    n = write_pairs_csv(build_pairs(records, seed=args.seed, options=options), args.out)
    print(f"wrote {n} pairs from {len(records)} studies to {args.out}")  # counts only, never report text
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
