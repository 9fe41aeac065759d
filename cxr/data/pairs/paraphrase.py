"""Optional LLM paraphrases of reports through an OpenAI-compatible chat endpoint (paper §B.1).

Talks to ``{base_url}/chat/completions`` (e.g. a local vLLM server at ``http://127.0.0.1:8000/v1``) through the
project's one LLM HTTP client (:mod:`cxr.llm_client`): no proxy for a loopback endpoint, redirects refused (the API
key is never sent to another host), retries with backoff honouring ``Retry-After``. :func:`paraphrase_csv` keeps
``workers`` requests in flight and appends each finished row to the output CSV as it arrives (append-only: the
cost per row is constant, never a rewrite of the file); a rerun skips the rows already there, so a killed run
resumes where it stopped. Report text is never logged; logs and errors name rows and counts only.

    python -m cxr.data.pairs.paraphrase --in reports.csv --out reports_para.csv --base-url http://127.0.0.1:8000/v1 \\
        --model my-model --api-key-env OPENAI_API_KEY --workers 8
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.data.pairs.pairs import PairRecord
from cxr.data.pairs.tasks import PairTask
from cxr.llm_client import (
    LLMRequestError,
    RetryPolicy,
    bounded_map,
    build_opener,
    chat_completions_url,
    post_chat,
)

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a specialist in chest imaging report analysis (X-ray and CT). Rewrite the report you are given "
    "as a clear, clinically accurate, American-style radiology report. Expand abbreviations, except ones that "
    "every clinician knows (such as COPD). You may replace a finding with a radiologically equivalent "
    "expression, but keep every finding, its laterality, location, distribution, severity, measurements, "
    "devices and comparisons with prior studies exactly as stated; add nothing and leave nothing out. "
    "Output only the rewritten report text, with no preamble or explanation."
)
FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("Lt PLEFF, small. No PTX.", "There is a small left pleural effusion. There is no pneumothorax."),
    ("ETT 3cm above carina. b/l basal atelectasis, improved.",
     "The endotracheal tube tip is 3 cm above the carina. Bilateral basilar atelectasis has improved."),
)
#: column of the output CSV holding the 1-based source row a paraphrase belongs to
ROW_COLUMN = "source_row"


class ParaphraseError(LLMRequestError):
    """The endpoint failed or answered unusably (the message never contains report text)."""


@dataclass
class ParaphraseSettings:
    """Endpoint and generation settings. The API key is read from the environment variable ``api_key_env``."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_tokens: int = 512
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    workers: int = 4


def build_messages(report: str) -> list[dict[str, str]]:
    """Chat messages: system persona/rules, few-shot examples, then the report."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for src, dst in FEW_SHOT:
        messages += [{"role": "user", "content": src}, {"role": "assistant", "content": dst}]
    messages.append({"role": "user", "content": report})
    return messages


class ParaphraseClient:
    """OpenAI-compatible chat-completions client (:mod:`cxr.llm_client`: no loopback proxy, no redirects)."""

    def __init__(self, settings: ParaphraseSettings) -> None:
        self.settings = settings
        self.url = chat_completions_url(settings.base_url, "paraphrase")
        self.api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self._opener = build_opener(self.url, ParaphraseError, "paraphrase endpoint")
        self._policy = RetryPolicy(settings.max_retries, settings.backoff_s, settings.max_backoff_s,
                                   settings.timeout_s)

    def _request(self, report: str) -> urllib.request.Request:
        payload = {"model": self.settings.model, "messages": build_messages(report),
                   "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"), headers=headers,
                                      method="POST")

    def paraphrase(self, report: str) -> str:
        """One paraphrase of ``report``; raises :class:`ParaphraseError` after the retries are spent."""
        text = post_chat(self._opener, lambda: self._request(report), self._policy, ParaphraseError,
                         "paraphrase endpoint")
        if not text.strip():
            raise ParaphraseError(f"{self.url}: empty paraphrase returned")
        return text.strip()


@dataclass
class ParaphraseStats:
    """Counts of one :func:`paraphrase_csv` run."""

    total: int
    already_done: int
    generated: int


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), [dict(r) for r in reader]


def _stored_rows(out_csv: Path, rows: list[dict[str, str]], text_column: str,
                 output_column: str) -> dict[int, str]:
    """Paraphrases already in ``out_csv`` by source row; a line cut off by a killed run is ignored (redone)."""
    done: dict[int, str] = {}
    if not out_csv.is_file():
        return done
    with open(out_csv, encoding="utf-8", newline="") as fh:
        text = fh.read()
    complete = text if text.endswith("\n") else text[:text.rfind("\n") + 1]  # drop a cut-off last line
    for rec in csv.DictReader(io.StringIO(complete)):
        try:
            i = int(rec[ROW_COLUMN])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{out_csv}: no {ROW_COLUMN!r} column: not an output of paraphrase_csv") from None
        if not 1 <= i <= len(rows) or rec.get(text_column) != rows[i - 1][text_column]:
            raise ValueError(f"{out_csv}: row {i} text differs from the source (or is out of range): not a resume "
                             "of it; refusing to reuse its paraphrases")
        if (rec.get(output_column) or "").strip():
            done[i] = rec[output_column]
    return done


def _drop_cut_off_line(path: Path) -> None:
    """Truncate a last line cut off by a killed run (its row is redone), so appends start on a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def _append_row(fh, header: list[str], record: dict[str, str]) -> None:
    writer = csv.DictWriter(fh, fieldnames=header)
    if fh.tell() == 0:
        writer.writeheader()
    writer.writerow(record)
    fh.flush()  # one complete line per row: a killed run loses at most the line being written


def paraphrase_csv(in_csv: str | Path, out_csv: str | Path, settings: ParaphraseSettings,
                   text_column: str = "report", output_column: str = "paraphrase",
                   limit: int | None = None, client: ParaphraseClient | None = None) -> ParaphraseStats:
    """Paraphrase ``text_column`` of ``in_csv`` into ``out_csv`` (append-only, ``settings.workers`` concurrent).

    ``out_csv`` gets one line per finished row, in completion order: ``source_row``, the source columns and
    ``output_column``. Rows already there (same text) are skipped. An error stops the run with the row named;
    every row finished before it is kept.
    """
    in_csv, out_csv = Path(in_csv), Path(out_csv)
    if settings.workers < 1:
        raise ValueError(f"paraphrase workers must be >= 1, got {settings.workers}")
    header, rows = _read_rows(in_csv)
    if text_column not in header:
        raise ValueError(f"{in_csv}: no column {text_column!r} (found {header})")
    for i, row in enumerate(rows, start=1):
        if not (row[text_column] or "").strip():
            raise ValueError(f"{in_csv}: row {i}: empty {text_column!r}")
    out_header = [ROW_COLUMN, *[h for h in header if h != output_column], output_column]
    done = _stored_rows(out_csv, rows, text_column, output_column)
    todo = [i for i in range(1, len(rows) + 1) if i not in done][:limit]
    client = client or ParaphraseClient(settings)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    _drop_cut_off_line(out_csv)
    generated = 0
    with open(out_csv, "a", encoding="utf-8", newline="") as fh:
        for i, fut in bounded_map(lambda i: client.paraphrase(rows[i - 1][text_column]), todo, settings.workers,
                                  "paraphrase"):
            try:
                text = fut.result()
            except ParaphraseError as err:
                raise ParaphraseError(f"row {i}: {err}", fatal=err.fatal) from None
            _append_row(fh, out_header, {ROW_COLUMN: str(i), **rows[i - 1], output_column: text})
            generated += 1
            if generated % 100 == 0:
                log.info("paraphrased %d new rows (%d of %d done)", generated, len(done) + generated, len(rows))
    return ParaphraseStats(total=len(rows), already_done=len(done), generated=generated)


def paraphrase_pairs(csv_path: str | Path, text_column: str = "report",
                     output_column: str = "paraphrase") -> list[PairRecord]:
    """``variant`` pairs (report, its paraphrase) from a paraphrased CSV; rows not yet done are left out."""
    _, rows = _read_rows(Path(csv_path))
    if rows and ROW_COLUMN in rows[0]:  # completion order on disk; pairs in source order
        rows.sort(key=lambda r: int(r[ROW_COLUMN]))
    return [PairRecord(r[text_column].strip(), r[output_column].strip(), None, PairTask.VARIANT)
            for r in rows if r.get(output_column, "").strip() and r.get(text_column, "").strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: paraphrase a CSV column through an OpenAI-compatible endpoint."""
    p = argparse.ArgumentParser(description="Paraphrase report texts with an OpenAI-compatible chat endpoint.")
    p.add_argument("--in", dest="in_csv", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    p.add_argument("--text-column", default="report")
    p.add_argument("--output-column", default="paraphrase")
    p.add_argument("--workers", type=int, default=4, help="requests in flight")
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = ParaphraseSettings(a.base_url, a.model, a.api_key_env, workers=a.workers)
    stats = paraphrase_csv(a.in_csv, a.out, settings, a.text_column, a.output_column, a.limit)
    print(f"{stats.generated} generated, {stats.already_done} already done, {stats.total} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
