"""Text-cache fill at scale: a fill SIGKILLed at ~50% resumes with only the rest; concurrent fills into one cache
keep every shard (locked manifest); an unwritable or full cache directory fails before the encoder is loaded;
worker tokenisation gives the same embeddings; the progress bar reports tokens/s."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cxr.models.text.cache import MANIFEST, CacheDirectoryError, TextEmbeddingCache, text_key


def _reports(n: int, offset: int = 0) -> list[str]:
    from cxr.models.text.tiny import RADIOLOGY_SENTENCES

    pool = [s for s in RADIOLOGY_SENTENCES if not s.startswith(("[", "Retrieve", "0 1"))]
    return [f"[FINDINGS] {pool[i % len(pool)]} {pool[(3 * i + 1) % len(pool)]} [IMPRESSION] Case {i}."
            for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model) -> Path:
    return tiny_text_model("llama", hidden_size=32, layers=1, heads=2, kv_heads=1)


def _tower(llama: Path, cache_dir: Path, **kw):
    from cxr.models.text.tower import TextTower

    kw = {"encode_batch_size": 4, "fill_commit_every": 8, "fill_workers": 0, **kw}
    return TextTower(str(llama), use_cache=True, cache_dir=str(cache_dir), instruction=None, **kw)


CHILD = textwrap.dedent("""
    import json, sys, time
    from cxr.models.text.encoder import TextEncoder
    from cxr.models.text.tower import TextTower

    llama, cache_dir, texts_file, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    real = TextEncoder.forward
    def slow(self, feats):  # a big LLM's forward, in slow motion: time for the parent to act
        time.sleep(delay)
        return real(self, feats)
    TextEncoder.forward = slow
    tower = TextTower(llama, use_cache=True, cache_dir=cache_dir, instruction=None, encode_batch_size=4,
                      fill_commit_every=8, fill_workers=0)
    tower.fill_cache(json.load(open(texts_file)))
""")


def _start_fill(tmp: Path, llama: Path, cache_dir: Path, texts: list[str], delay: float, tag: str):
    from _dist_helpers import child_env

    (tmp / f"{tag}.json").write_text(json.dumps(texts))
    (tmp / "child.py").write_text(CHILD)
    return subprocess.Popen([sys.executable, str(tmp / "child.py"), str(llama), str(cache_dir),
                             str(tmp / f"{tag}.json"), str(delay)], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _committed_rows(directory: Path) -> int:
    try:
        return sum(s["rows"] for s in json.loads((directory / MANIFEST).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _count_forward_rows(monkeypatch) -> list[int]:
    from cxr.models.text.encoder import TextEncoder

    rows: list[int] = []
    real = TextEncoder.forward

    def counting(self, feats):
        rows.append(len(feats))
        return real(self, feats)

    monkeypatch.setattr(TextEncoder, "forward", counting)
    return rows


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
@pytest.mark.timeout(600)
def test_fill_killed_at_half_resumes_with_only_the_rest(tmp_path, tiny_llama, monkeypatch) -> None:
    texts = _reports(80)
    cache_dir = tmp_path / "cache"
    directory = _tower(tiny_llama, cache_dir).cache.directory
    child = _start_fill(tmp_path, tiny_llama, cache_dir, texts, delay=0.25, tag="kill")
    deadline = time.time() + 400
    while _committed_rows(directory) < 40 and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # a real kill -9, mid-fill
    out = child.communicate()[0]
    assert child.returncode == -signal.SIGKILL, out[-3000:]
    committed = _committed_rows(directory)
    assert 40 <= committed < 80  # periodic commits kept about half of the work

    rows = _count_forward_rows(monkeypatch)
    tower = _tower(tiny_llama, cache_dir)
    assert tower.fill_cache(texts) == 80 - committed
    assert sum(rows) == 80 - committed  # only the rest went through the encoder
    resumed = tower(texts)

    reference = _tower(tiny_llama, tmp_path / "reference")
    assert reference.fill_cache(texts) == 80
    expected = reference(texts)
    assert not torch.equal(expected[0], expected[1])
    torch.testing.assert_close(resumed, expected, atol=1e-5, rtol=1e-5)


def test_a_stale_handle_committing_keeps_the_other_writers_shards(tmp_path) -> None:
    first, second = TextEmbeddingCache(tmp_path, "fp"), TextEmbeddingCache(tmp_path, "fp")  # both see nothing
    k1, k2 = text_key("one", None), text_key("two", None)
    first.add([k1], torch.ones(1, 4))
    second.add([k2], torch.zeros(1, 4))  # committed from a handle that never saw k1's shard
    fresh = TextEmbeddingCache(tmp_path, "fp")
    assert fresh.missing([k1, k2]) == [] and torch.equal(fresh.lookup([k1]), torch.ones(1, 4))


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
@pytest.mark.timeout(600)
def test_two_concurrent_fills_into_one_cache_keep_every_shard(tmp_path, tiny_llama) -> None:
    a, b = _reports(48), _reports(48, offset=24)  # overlapping halves
    cache_dir = tmp_path / "cache"
    children = [_start_fill(tmp_path, tiny_llama, cache_dir, texts, delay=0.02, tag=tag)
                for tag, texts in (("a", a), ("b", b))]
    for child in children:
        out = child.communicate(timeout=500)[0]
        assert child.returncode == 0, out[-3000:]
    tower = _tower(tiny_llama, cache_dir)
    every = list(dict.fromkeys(a + b))
    assert tower.cache.missing(tower.keys(every)) == []  # 72 texts, commits of 8 from two processes interleaved
    manifest = json.loads((tower.cache.directory / MANIFEST).read_text())
    assert len(manifest["shards"]) >= 12


def test_unwritable_or_full_directory_fails_before_the_encoder_loads(tmp_path, tiny_llama, monkeypatch) -> None:
    from cxr.models.text import cache as cache_module
    from cxr.models.text.tower import TextTower

    def never(self):
        raise AssertionError("the encoder must not be loaded")

    monkeypatch.setattr(TextTower, "build_encoder", never)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheDirectoryError, match="not writable"):
        _tower(tiny_llama, blocker / "cache").fill_cache(_reports(4))

    class Usage:
        free = 10 << 20

    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(CacheDirectoryError, match=r"10 MiB free; 4 embeddings of dim 32 need"):
        _tower(tiny_llama, tmp_path / "full").fill_cache(_reports(4))


def test_worker_tokenisation_and_progress(tmp_path, tiny_llama, capsys) -> None:
    from cxr.models.text.fill import FillSettings, embed_into_cache

    texts = _reports(20)
    in_process = _tower(tiny_llama, tmp_path / "a")
    in_process.fill_cache(texts)
    workers = _tower(tiny_llama, tmp_path / "b", fill_workers=2)
    workers.fill_cache(texts)
    torch.testing.assert_close(workers(texts), in_process(texts), atol=0, rtol=0)

    tower = _tower(tiny_llama, tmp_path / "c")
    enc = tower.build_encoder()
    keys = tower.keys(texts)
    rate = embed_into_cache(enc, tower.cache, keys, texts, "cpu", FillSettings(batch_size=4, num_workers=1))
    assert rate > 0 and "tok_s=" in capsys.readouterr().err
    tower.cache.reload()
    assert tower.cache.missing(keys) == []
    with pytest.raises(ValueError, match="invalid fill settings"):
        FillSettings(commit_every=0)
