"""How many realistic reports each error category of the paper's taxonomy applies to (issue 10, item 10).

Builds the realistic synthetic corpus (:func:`cxr.data.synthetic.corpus.realistic_corpus`) and asks
:func:`cxr.reports.errors.applicable_errors` which of the 9 categories apply to

* each whole report (what the pair builder corrupts for the ``variant``/``classify`` tasks), and
* each impression with its findings as context (what the ``summarize`` pairs and the MC4 error benchmark corrupt:
  an added device or finding must not be one the findings state).

Usage::

    python benchmarks/error_coverage.py --num-reports 2000 --seed 9 [--out runs/error_coverage]

prints a Markdown table (count and share per category, "any" and "any of 1-6") and exits 1 when the reports or
impressions some category applies to ("any", and "any of 1-6") are fewer than ``--min-share`` of them. Prints counts only, never report text.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.data.synthetic.corpus import corpus_records, realistic_corpus
from cxr.evaluation.tables import markdown_table
from cxr.records import StudyRecord
from cxr.reports.compose import compose_report_text
from cxr.reports.errors import PREFERRED_KINDS, ErrorKind, applicable_errors

ANY = "any"
ANY_PREFERRED = "any of 1-6"
#: categories that rewrite a stated fact (not those that append a sentence): how far the rules read real phrasings
ANY_EDIT = "any edit of a stated fact (1-5, 8, 9)"
ADDING = frozenset({ErrorKind.ADD_OPPOSITE_SENTENCE, ErrorKind.ADD_DEVICE})


@dataclass(frozen=True)
class Coverage:
    """Reports / impressions each category applies to, and how many there were."""

    reports: Counter
    num_reports: int
    impressions: Counter
    num_impressions: int

    def share(self, key: str) -> tuple[float, float]:
        """Share of reports and of impressions ``key`` (a category value, ``any`` or ``any of 1-6``) covers."""
        return (self.reports[key] / max(self.num_reports, 1),
                self.impressions[key] / max(self.num_impressions, 1))


def _tally(counter: Counter, kinds: set[ErrorKind]) -> None:
    counter.update(k.value for k in kinds)
    counter[ANY] += bool(kinds)
    counter[ANY_PREFERRED] += bool(kinds & set(PREFERRED_KINDS))
    counter[ANY_EDIT] += bool(kinds - ADDING)


def error_coverage(records: Sequence[StudyRecord]) -> Coverage:
    """Which categories apply to each report and to each impression (with its findings as context)."""
    reports, impressions, n_imp = Counter(), Counter(), 0
    for record in records:
        rng = random.Random(record.study_id)
        _tally(reports, {e.kind for e in applicable_errors(compose_report_text(record.report), rng)})
        if record.report.impression and record.report.impression.strip():
            n_imp += 1
            context = record.report.findings if record.report.findings else None
            _tally(impressions, {e.kind for e in applicable_errors(record.report.impression, rng,
                                                                   context=context)})
    return Coverage(reports, len(records), impressions, n_imp)


def coverage_rows(cov: Coverage) -> list[list[object]]:
    """Table rows: category number and name, reports (count, %), impressions (count, %)."""
    keys = [(str(i), k.value) for i, k in enumerate(ErrorKind, start=1)] + [("", ANY_EDIT), ("", ANY_PREFERRED), ("", ANY)]
    rows = []
    for number, key in keys:
        r, i = cov.share(key)
        rows.append([number, key, cov.reports[key], f"{100 * r:.1f}%", cov.impressions[key], f"{100 * i:.1f}%"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-reports", type=int, default=2000)
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--min-share", type=float, default=0.9, help="required share covered by some category")
    p.add_argument("--out", default=None, help="folder for error_coverage.md/.json")
    args = p.parse_args(argv)
    cov = error_coverage(corpus_records(realistic_corpus(args.num_reports, args.seed)))
    header = ["#", "category", f"reports (of {cov.num_reports})", "%",
              f"impressions (of {cov.num_impressions}, findings as context)", "%"]
    table = markdown_table(header, coverage_rows(cov))
    sys.stdout.write(table)
    short = [f"{where} {key}" for key in (ANY, ANY_PREFERRED)
             for where, share in zip(("reports", "impressions"), cov.share(key), strict=True)
             if share < args.min_share]
    print(f"below {args.min_share:.0%}: {short or 'none'}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "error_coverage.md").write_text(table, encoding="utf-8")
        (out / "error_coverage.json").write_text(json.dumps(
            {"args": vars(args), "num_reports": cov.num_reports, "num_impressions": cov.num_impressions,
             "reports": dict(cov.reports), "impressions": dict(cov.impressions)}, indent=2), encoding="utf-8")
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
