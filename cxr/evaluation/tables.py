"""Write evaluation results as Markdown / CSV / JSON tables and top-1 retrieval dumps (CSV + JSONL)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from cxr.evaluation.retrieval_eval import DIRECTIONS, DatasetResult, metric_columns


def results_table(results: Sequence[DatasetResult]) -> tuple[list[str], list[list[object]]]:
    """``(header, rows)``: one row per dataset and direction, with the retrieval protocol that scored it;
    missing metrics are empty."""
    cols = metric_columns(results)
    header = ["dataset", "direction", "protocol", *cols]
    rows = []
    for r in results:
        for d in DIRECTIONS:
            values = r.metrics.get(d, {})
            rows.append([r.name, d, r.protocol, *[values.get(c, "") for c in cols]])
    return header, rows


def zero_shot_table(results: Sequence[DatasetResult]) -> tuple[list[str], list[list[object]]]:
    """``(header, rows)`` of zero-shot AUROC: one row per dataset that has it, ``mean`` then the observations
    (in first-seen order); an observation without both classes in a dataset is left empty there."""
    observations: dict[str, None] = {}
    for r in results:
        for k in r.zero_shot:
            if k != "mean":
                observations.setdefault(k, None)
    header = ["dataset", "mean", *observations]
    rows = [[r.name, *[r.zero_shot.get(c, "") for c in header[1:]]] for r in results if r.zero_shot]
    return header, rows


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[DatasetResult], out_dir: Path, settings: dict | None = None) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``results.json`` (and ``zero_shot.csv`` when any dataset has
    zero-shot AUROC, also appended to ``results.md`` and under ``"zero_shot"`` in the JSON); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(results)
    paths = {"md": out_dir / "results.md", "csv": out_dir / "results.csv", "json": out_dir / "results.json"}
    md = markdown_table(header, rows)
    zs_header, zs_rows = zero_shot_table(results)
    if zs_rows:
        md += "\nZero-shot AUROC (prompt pairs; observations with both classes only):\n\n"
        md += markdown_table(zs_header, zs_rows)
        paths["zero_shot_csv"] = out_dir / "zero_shot.csv"
        with open(paths["zero_shot_csv"], "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(zs_header)
            writer.writerows(zs_rows)
    if settings:
        md += "\nSettings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n"
    paths["md"].write_text(md, encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    payload = {"settings": settings or {}, "datasets": {r.name: r.metrics for r in results}}
    if zs_rows:
        payload["zero_shot"] = {r.name: r.zero_shot for r in results if r.zero_shot}
    paths["json"].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return paths


def write_top1_dump(result: DatasetResult, out_dir: Path) -> dict[str, Path]:
    """Write ``top1_<dataset>.csv`` and ``.jsonl`` (query key, ground truth, retrieved report, rank)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in result.name)
    csv_path, jsonl_path = out_dir / f"top1_{safe}.csv", out_dir / f"top1_{safe}.jsonl"
    rows = [asdict(r) for r in result.top1]
    fields = list(rows[0]) if rows else ["query_study_key"]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with open(jsonl_path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"csv": csv_path, "jsonl": jsonl_path}
