"""A fake OpenAI-compatible judge on 127.0.0.1 for the GREEN client tests.

It answers ``POST /v1/chat/completions`` with a GREEN-format analysis whose counts are read from the candidate
report inside the prompt: a candidate containing ``M=2 A=1 C=3`` gets 2 matched findings, 1 error (a) and 3 errors
(c). Behaviour switches: ``fail_first`` (answer the first N requests of every candidate with ``fail_status``),
``fail_always`` (candidates that always get ``fail_status``), ``redirect_to`` (answer every request with a 307 to
that URL), ``delay_s`` (hold each request, to observe concurrency).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LETTERS = "ABCDEF"


def green_answer(candidate: str) -> str:
    """A GREEN-format analysis with the counts encoded in ``candidate``."""
    counts = {k: int(v) for k, v in re.findall(r"\b([MABCDEF])=(\d+)", candidate)}
    names = ["False report of a finding in the candidate", "Missing a finding present in the reference",
             "Misidentification of a finding's anatomic location/position",
             "Misassessment of the severity of a finding", "Mentioning a comparison that isn't in the reference",
             "Omitting a comparison detailing a change from a prior study"]
    sig = "\n".join(f"({c.lower()}) {n}: {counts.get(c, 0)}." + (" Some error." if counts.get(c) else "")
                    for c, n in zip(LETTERS, names, strict=True))
    insig = "\n".join(f"({c.lower()}) {n}: 1. A style issue." for c, n in zip(LETTERS, names, strict=True))
    matched = counts.get("M", 0)
    return (f"\n[Explanation]:\nThe candidate was compared with the reference.\n\n[Clinically Significant Errors]:\n"
            f"{sig}\n\n[Clinically Insignificant Errors]:\n{insig}\n\n[Matched Findings]:\n{matched}."
            + (" A finding." if matched else ""))


@dataclass
class FakeJudge:
    """State shared with the request handler threads."""

    fail_first: int = 0
    fail_status: int = 503
    fail_always: set[str] = field(default_factory=set)
    redirect_to: str | None = None
    delay_s: float = 0.0
    retry_after: str | None = None
    answer: Callable[[str, str], str] | None = None  # (reference, candidate) -> analysis; default green_answer
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def candidate_of(prompt: str) -> str:
        return prompt.split("3. Candidate Report:\n    ", 1)[1].split("\n\n    4. Reporting", 1)[0]

    @staticmethod
    def reference_of(prompt: str) -> str:
        return prompt.split("2. Reference Report:\n    ", 1)[1].split("\n\n    3. Candidate", 1)[0]


def _handler(state: FakeJudge):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict | None = None, headers: dict | None = None) -> None:
            body = json.dumps(payload or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append(body)
                state.headers.append(dict(self.headers))
                state.active += 1
                state.max_active = max(state.max_active, state.active)
            try:
                time.sleep(state.delay_s)
                self._answer(body)
            finally:
                with state.lock:
                    state.active -= 1

        def _answer(self, body: dict) -> None:
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": "not found"})
                return
            if state.redirect_to:
                self._send(307, {}, {"Location": state.redirect_to})
                return
            prompt = body["messages"][0]["content"]
            candidate = FakeJudge.candidate_of(prompt)
            with state.lock:
                state.seen[candidate] += 1
                n = state.seen[candidate]
            if candidate in state.fail_always or n <= state.fail_first:
                extra = {"Retry-After": state.retry_after} if state.retry_after is not None else None
                self._send(state.fail_status, {"error": "busy"}, extra)
                return
            content = (state.answer(FakeJudge.reference_of(prompt), candidate) if state.answer
                       else green_answer(candidate))
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                  "content": content}}]})

    return Handler


class FakeJudgeServer:
    """Context manager: a threaded fake judge on 127.0.0.1 (free port); ``url`` is its ``/v1`` base URL."""

    def __init__(self, state: FakeJudge | None = None) -> None:
        self.state = state or FakeJudge()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeJudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
