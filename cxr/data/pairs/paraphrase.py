"""Optional LLM paraphrases of reports through an OpenAI-compatible chat endpoint (paper §B.1).

Talks to ``{base_url}/chat/completions`` (e.g. a local vLLM server at ``http://127.0.0.1:8000/v1``) with the
standard library only. :func:`paraphrase_csv` is resumable: it caches results in the output CSV, skips rows
already done, and rewrites the file atomically every ``save_every`` rows. Report text is never logged; logs and
errors name rows and counts only.

    python -m cxr.data.pairs.paraphrase --in reports.csv --out reports_para.csv --base-url http://127.0.0.1:8000/v1 \\
        --model my-model --api-key-env OPENAI_API_KEY
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.data.pairs.pairs import PairRecord
from cxr.data.pairs.tasks import PairTask

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
#: HTTP statuses worth retrying (rate limit, server busy/unavailable).
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ParaphraseError(RuntimeError):
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


def build_messages(report: str) -> list[dict[str, str]]:
    """Chat messages: system persona/rules, few-shot examples, then the report."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for src, dst in FEW_SHOT:
        messages += [{"role": "user", "content": src}, {"role": "assistant", "content": dst}]
    messages.append({"role": "user", "content": report})
    return messages


class ParaphraseClient:
    """Minimal OpenAI-compatible chat-completions client with retries and exponential backoff."""

    def __init__(self, settings: ParaphraseSettings) -> None:
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.settings.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def paraphrase(self, report: str) -> str:
        """One paraphrase of ``report``; raises :class:`ParaphraseError` after the retries are spent."""
        payload = {"model": self.settings.model, "messages": build_messages(report),
                   "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        last = "no attempt"
        for attempt in range(self.settings.max_retries + 1):
            try:
                body = self._post(payload)
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code not in RETRY_STATUSES:
                    raise ParaphraseError(f"{self.url}: {last} (not retried)") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"connection error ({type(err).__name__})"
            except json.JSONDecodeError:
                last = "response is not JSON"
            else:
                try:
                    text = body["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    raise ParaphraseError(f"{self.url}: response has no choices[0].message.content") from None
                if not isinstance(text, str) or not text.strip():
                    raise ParaphraseError(f"{self.url}: empty paraphrase returned")
                return text.strip()
            if attempt < self.settings.max_retries:
                time.sleep(self.settings.backoff_s * (2 ** attempt))
        raise ParaphraseError(f"{self.url}: failed after {self.settings.max_retries + 1} attempts ({last})")


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


def _write_rows_atomic(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def paraphrase_csv(in_csv: str | Path, out_csv: str | Path, settings: ParaphraseSettings,
                   text_column: str = "report", output_column: str = "paraphrase", save_every: int = 20,
                   limit: int | None = None, client: ParaphraseClient | None = None) -> ParaphraseStats:
    """Add ``output_column`` to a copy of ``in_csv`` written to ``out_csv``, resuming from ``out_csv``.

    Rows whose output cell is already filled are skipped (the source text must be unchanged, else it raises).
    Progress is written atomically every ``save_every`` new rows and when an error stops the run.
    """
    in_csv, out_csv = Path(in_csv), Path(out_csv)
    header, rows = _read_rows(in_csv)
    if text_column not in header:
        raise ValueError(f"{in_csv}: no column {text_column!r} (found {header})")
    if output_column not in header:
        header.append(output_column)
    done_before = 0
    if out_csv.exists():
        _, cached = _read_rows(out_csv)
        if len(cached) != len(rows):
            raise ValueError(f"{out_csv} has {len(cached)} rows but {in_csv} has {len(rows)}: not a resume of it")
        for i, (row, old) in enumerate(zip(rows, cached, strict=False), start=1):
            if old.get(text_column) != row[text_column]:
                raise ValueError(f"{out_csv}: row {i} text differs from {in_csv}; refusing to reuse its paraphrase")
            row[output_column] = old.get(output_column) or ""
    for row in rows:
        row.setdefault(output_column, "")
        row[output_column] = row[output_column] or ""
        done_before += bool(row[output_column].strip())
    client = client or ParaphraseClient(settings)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    generated = 0
    try:
        for i, row in enumerate(rows, start=1):
            if row[output_column].strip():
                continue
            if limit is not None and generated >= limit:
                break
            if not row[text_column].strip():
                raise ValueError(f"{in_csv}: row {i}: empty {text_column!r}")
            try:
                row[output_column] = client.paraphrase(row[text_column])
            except ParaphraseError as err:
                raise ParaphraseError(f"row {i}: {err}") from None
            generated += 1
            if generated % save_every == 0:
                _write_rows_atomic(out_csv, header, rows)
                log.info("paraphrased %d new rows (%d total done of %d)", generated, done_before + generated,
                         len(rows))
    finally:
        _write_rows_atomic(out_csv, header, rows)
    return ParaphraseStats(total=len(rows), already_done=done_before, generated=generated)


def paraphrase_pairs(csv_path: str | Path, text_column: str = "report",
                     output_column: str = "paraphrase") -> list[PairRecord]:
    """``variant`` pairs (report, its paraphrase) from a paraphrased CSV; rows not yet done are left out."""
    _, rows = _read_rows(Path(csv_path))
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
    p.add_argument("--save-every", type=int, default=20)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    stats = paraphrase_csv(a.in_csv, a.out, ParaphraseSettings(a.base_url, a.model, a.api_key_env),
                           a.text_column, a.output_column, a.save_every, a.limit)
    print(f"{stats.generated} generated, {stats.already_done} already done, {stats.total} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
