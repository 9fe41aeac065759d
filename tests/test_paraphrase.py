"""Paraphrase client against a fake OpenAI-compatible server on loopback: generation, resume, errors."""

from __future__ import annotations

import csv
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cxr.data.pairs.paraphrase import (
    ParaphraseClient,
    ParaphraseError,
    ParaphraseSettings,
    build_messages,
    paraphrase_csv,
    paraphrase_pairs,
)
from cxr.data.pairs.tasks import PairTask


class FakeServer:
    """Answers chat completions with "PARA: <last user message>"; scripted failures via ``plan``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.plan: list[int] = []  # status codes to return before answering normally (popped per request)
        self.fail_from: int | None = None  # every request from this count on gets HTTP 400
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization"))
                status = outer.plan.pop(0) if outer.plan else 200
                if outer.fail_from is not None and len(outer.requests) >= outer.fail_from:
                    status = 400
                if self.path != "/v1/chat/completions":
                    status = 404
                if status != 200:
                    self.send_response(status)
                    self.end_headers()
                    return
                text = "PARA: " + body["messages"][-1]["content"]
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def server():
    s = FakeServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _settings(server, **kw) -> ParaphraseSettings:
    return ParaphraseSettings(base_url=server.base_url, model="fake-model", api_key_env="CXR_TEST_KEY",
                              backoff_s=0.01, timeout_s=5, **kw)


def _write_reports(path, n):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "report"])
        for i in range(n):
            w.writerow([f"s{i}", f"Small left PLEFF {i}."])


def test_prompt_in_the_papers_spirit():
    msgs = build_messages("Rt PTX.")
    assert msgs[0]["role"] == "system" and "laterality" in msgs[0]["content"]
    assert "abbreviations" in msgs[0]["content"] and "Output only" in msgs[0]["content"]
    assert msgs[-1] == {"role": "user", "content": "Rt PTX."}


def test_generation_with_key_and_retry(server, monkeypatch):
    monkeypatch.setenv("CXR_TEST_KEY", "sekret")
    server.plan = [503, 429]  # two transient failures, then success
    client = ParaphraseClient(_settings(server))
    assert client.paraphrase("No PTX.") == "PARA: No PTX."
    assert len(server.requests) == 3 and server.auth[-1] == "Bearer sekret"
    assert server.requests[-1]["model"] == "fake-model"


def test_errors_are_clear_and_never_contain_report_text(server, caplog):
    secret_report = "Patient John Doe has a large right pneumothorax."
    server.plan = [400]
    with pytest.raises(ParaphraseError, match=r"answered HTTP 400") as exc:
        ParaphraseClient(_settings(server)).paraphrase(secret_report)
    assert "pneumothorax" not in str(exc.value)
    server.plan = [503] * 10
    with pytest.raises(ParaphraseError, match=r"failed 3 times \(last: HTTP 503\)"):
        ParaphraseClient(_settings(server, max_retries=2)).paraphrase(secret_report)
    dead = ParaphraseSettings(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0.01,
                              timeout_s=2)
    with pytest.raises(ParaphraseError, match="failed 2 times"):
        ParaphraseClient(dead).paraphrase(secret_report)
    assert "pneumothorax" not in caplog.text


def test_resume_after_interruption(server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    src, out = tmp_path / "reports.csv", tmp_path / "para.csv"
    _write_reports(src, 7)
    server.fail_from = 4  # the 4th request fails hard: an interruption after 3 rows
    with pytest.raises(ParaphraseError, match="row 4"):
        paraphrase_csv(src, out, _settings(server, workers=1))
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source_row"] for r in rows] == ["1", "2", "3"] and all(r["paraphrase"] for r in rows)
    first_run = out.read_bytes()
    server.fail_from = None
    n_before = len(server.requests)
    stats = paraphrase_csv(src, out, _settings(server))
    assert (stats.total, stats.already_done, stats.generated) == (7, 3, 4)
    assert out.read_bytes().startswith(first_run)  # append-only: what was written is never rewritten
    assert len(server.requests) - n_before == 4  # done rows were not requested again
    pairs = paraphrase_pairs(out)
    assert len(pairs) == 7 and pairs[5].positive == "PARA: Small left PLEFF 5."
    assert all(p.task is PairTask.VARIANT for p in pairs)
    stats = paraphrase_csv(src, out, _settings(server))
    assert stats.generated == 0
    assert "PLEFF" not in caplog.text  # logs carry counts only


def test_resume_refuses_a_different_source(server, tmp_path):
    src, out = tmp_path / "reports.csv", tmp_path / "para.csv"
    _write_reports(src, 3)
    paraphrase_csv(src, out, _settings(server), limit=1)
    _write_reports(src, 4)  # same texts, one row more: a valid resume of the same source
    assert paraphrase_csv(src, out, _settings(server), limit=1).already_done == 1
    src.write_text("study_id,report\ns9,Another report.\n")
    with pytest.raises(ValueError, match="not a resume"):
        paraphrase_csv(src, out, _settings(server))
    with pytest.raises(ValueError, match="no column 'text'"):
        paraphrase_csv(src, tmp_path / "x.csv", _settings(server), text_column="text")


def test_concurrent_requests_and_a_cut_off_line_is_redone(server, tmp_path):
    src, out = tmp_path / "reports.csv", tmp_path / "para.csv"
    _write_reports(src, 12)
    paraphrase_csv(src, out, _settings(server, workers=4), limit=5)
    with open(out, "a", encoding="utf-8") as fh:  # a run killed mid-write leaves half a line
        fh.write('9,s8,"Small left PLEFF 8.",PARA: Sma')
    stats = paraphrase_csv(src, out, _settings(server, workers=4))
    assert (stats.already_done, stats.generated) == (5, 7)
    pairs = paraphrase_pairs(out)
    assert [p.positive for p in pairs] == [f"PARA: Small left PLEFF {i}." for i in range(12)]
    assert len(server.requests) == 12


def test_loopback_bypasses_proxies_and_redirects_never_carry_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_TEST_KEY", "sekret")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a dead proxy: using it would fail
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert ParaphraseClient(_settings(server)).paraphrase("No PTX.") == "PARA: No PTX."
    other = FakeServer()
    other.thread.start()
    try:
        class Redirect(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.send_response(307)
                self.send_header("Location", f"http://localhost:{other.httpd.server_address[1]}/v1/chat/completions")
                self.end_headers()

        redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=redirector.serve_forever, daemon=True).start()
        settings = ParaphraseSettings(base_url=f"http://127.0.0.1:{redirector.server_address[1]}/v1", model="m",
                                      api_key_env="CXR_TEST_KEY", backoff_s=0.01, timeout_s=5)
        with pytest.raises(ParaphraseError, match="redirect") as err:
            ParaphraseClient(settings).paraphrase("Secret report.")
        assert err.value.fatal and other.requests == [] and "Secret" not in str(err.value)
        redirector.shutdown()
        redirector.server_close()
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()
