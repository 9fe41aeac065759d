"""Frozen text-embedding cache: hit, miss, invalidation, atomic writes, and the tower never building the LLM."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from cxr.models.text.cache import MANIFEST, TextEmbeddingCache, text_key

TEXTS = ["[FINDINGS] Lungs are clear. [IMPRESSION] No acute process.", "[IMPRESSION] Small left effusion.",
         "[FINDINGS] Heart size is normal."]


def test_hit_miss_and_roundtrip(tmp_path) -> None:
    cache = TextEmbeddingCache(tmp_path, "fp1")
    keys = [text_key(t, None) for t in TEXTS]
    assert cache.missing(keys + keys) == keys  # de-duplicated, ordered
    emb = torch.randn(3, 5)
    cache.add(keys[:2], emb[:2])
    assert cache.missing(keys) == [keys[2]]
    again = TextEmbeddingCache(tmp_path, "fp1")  # a fresh process sees the committed shard
    assert torch.equal(again.lookup([keys[1], keys[0]]), emb[[1, 0]])
    again.add([keys[2]], emb[2:])
    assert torch.equal(TextEmbeddingCache(tmp_path, "fp1").lookup(keys), emb)
    with pytest.raises(KeyError, match="not in cache"):
        again.lookup([text_key("other", None)])


def test_keys_change_with_instruction_and_text_and_fingerprint(tmp_path) -> None:
    assert text_key(TEXTS[0], None) != text_key(TEXTS[0], "Retrieve the image.")
    assert text_key(TEXTS[0], "a") != text_key(TEXTS[0] + " ", "a")
    assert text_key("ab", "c") != text_key("b", "ca")  # separator between instruction and text
    cache = TextEmbeddingCache(tmp_path, "fp1")
    cache.add([text_key(TEXTS[0], None)], torch.ones(1, 4))
    other = TextEmbeddingCache(tmp_path, "fp2")  # a different encoder never sees fp1's embeddings
    assert len(other) == 0 and other.missing([text_key(TEXTS[0], None)])


def test_partial_temp_file_is_never_read(tmp_path) -> None:
    cache = TextEmbeddingCache(tmp_path, "fp")
    keys = [text_key(t, None) for t in TEXTS]
    cache.add(keys[:1], torch.zeros(1, 4))
    # a writer killed mid-shard leaves an unreferenced temp file and an unlisted shard: both invisible
    (cache.directory / ".tmp-shard-dead.npy-x").write_bytes(b"\x93NUMPY garbage")
    cache.write_shard(keys[1:], torch.ones(2, 4))  # written but never committed
    fresh = TextEmbeddingCache(tmp_path, "fp")
    assert len(fresh) == 1 and fresh.missing(keys) == keys[1:]


def test_killed_writer_subprocess_leaves_cache_consistent(tmp_path) -> None:
    """A process SIGKILLed while writing a large shard: the manifest still names only complete shards."""
    cache = TextEmbeddingCache(tmp_path, "fp")
    cache.add([text_key("kept", None)], torch.full((1, 256), 3.0))
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        from cxr.models.text import cache as tc
        real_save = np.save
        def slow_save(f, arr):  # write half, announce, then wait to be killed
            f.write(b"\\x93NUMPY" + b"0" * 1000)
            f.flush()
            print("writing", flush=True)
            import time; time.sleep(60)
        tc.np.save = slow_save
        c = tc.TextEmbeddingCache({str(tmp_path)!r}, "fp")
        c.add([tc.text_key(str(i), None) for i in range(1000)], np.ones((1000, 256), np.float32))
    """)
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    fresh = TextEmbeddingCache(tmp_path, "fp")
    assert len(fresh) == 1
    assert torch.equal(fresh.lookup([text_key("kept", None)]), torch.full((1, 256), 3.0))
    leftovers = [p.name for p in fresh.directory.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the killed writer should have left its temp file (and nothing else) behind"
    assert (fresh.directory / MANIFEST).is_file()


def test_corrupt_manifest_shard_mismatch_is_an_error(tmp_path) -> None:
    cache = TextEmbeddingCache(tmp_path, "fp")
    cache.add([text_key("a", None)], torch.zeros(1, 4))
    shard = next(cache.directory.glob("shard-*[0-9a-f].npy"))
    np.save(shard, np.zeros((2, 4), np.float32))  # tampered with outside the cache
    with pytest.raises(ValueError, match="does not match its manifest"):
        TextEmbeddingCache(tmp_path, "fp")


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model):
    return tiny_text_model("llama", hidden_size=32, layers=1)


def test_tower_fills_cache_then_never_builds_encoder(tmp_path, tiny_llama) -> None:
    from cxr.models.text.tower import TextTower

    tower = TextTower(str(tiny_llama), use_cache=True, cache_dir=str(tmp_path), instruction=None)
    assert tower.fill_cache(TEXTS + TEXTS[:1]) == 3
    assert tower.encoder is None  # released after filling
    first = tower(TEXTS)
    # a new tower (new process) finds everything cached and does not load the model
    again = TextTower(str(tiny_llama), use_cache=True, cache_dir=str(tmp_path), instruction=None)
    assert again.fill_cache(TEXTS) == 0
    assert torch.equal(again(TEXTS), first)
    assert again.encoder is None
    # the embeddings are the encoder's own
    online = TextTower(str(tiny_llama), use_cache=False, instruction=None)
    assert torch.allclose(online.encode_online(TEXTS).float(), first, atol=1e-5)
    # another instruction is a different key: cache miss
    instructed = TextTower(str(tiny_llama), use_cache=True, cache_dir=str(tmp_path), instruction="Find the image.")
    assert instructed.cache.missing(instructed.keys(TEXTS)) == instructed.keys(TEXTS)


def test_fingerprint_changes_with_weights_and_settings(tmp_path, tiny_llama) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from cxr.models.text.tower import TextTower

    base = TextTower(str(tiny_llama), use_cache=False, instruction=None)
    assert base.fingerprint() == TextTower(str(tiny_llama), use_cache=False, instruction=None).fingerprint()
    assert base.fingerprint() != TextTower(str(tiny_llama), use_cache=False, instruction=None,
                                           max_length=64).fingerprint()
    copy = tmp_path / "m2"
    shutil.copytree(tiny_llama, copy)
    sd = load_file(copy / "model.safetensors")
    name = next(k for k in sd if k.endswith("embed_tokens.weight"))
    sd[name] = sd[name] + 0.01
    save_file(sd, copy / "model.safetensors", metadata={"format": "pt"})
    assert TextTower(str(copy), use_cache=False, instruction=None).fingerprint() != base.fingerprint()
    # an unmerged export keeps its LoRA weights in adapter/: a re-trained adapter is a different encoder
    (copy / "adapter").mkdir()
    save_file({"lora_A": torch.zeros(2, 4)}, copy / "adapter" / "adapter_model.safetensors")
    with_adapter = TextTower(str(copy), use_cache=False, instruction=None).fingerprint()
    save_file({"lora_A": torch.ones(2, 4)}, copy / "adapter" / "adapter_model.safetensors")
    assert TextTower(str(copy), use_cache=False, instruction=None).fingerprint() != with_adapter


def test_cache_with_lora_or_without_dir_is_refused(tiny_llama) -> None:
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.tower import TextTower

    with pytest.raises(ValueError, match="frozen encoder"):
        TextTower(str(tiny_llama), use_cache=True, cache_dir="x", lora=LoraSettings())
    with pytest.raises(ValueError, match="cache_dir"):
        TextTower(str(tiny_llama), use_cache=True, cache_dir=None)
    with pytest.raises(FileNotFoundError, match="text encoder not found"):
        TextTower("./no/such/encoder", use_cache=False)


def test_frozen_encoder_stays_in_eval_mode_when_the_module_trains(tiny_llama) -> None:
    """Lightning calls ``model.train()`` at fit start; a frozen encoder must not switch dropout on."""
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.tower import TextTower

    frozen = TextTower(str(tiny_llama), use_cache=False, instruction=None)
    frozen.build_encoder()
    wrapper = torch.nn.Sequential(frozen)  # as inside CLIPAlignModule
    wrapper.train()
    assert frozen.training and not any(m.training for m in frozen.encoder.modules())
    lora = TextTower(str(tiny_llama), use_cache=False, instruction=None, lora=LoraSettings(r=2, alpha=4))
    lora.build_encoder()
    lora.train()
    assert any(m.training for m in lora.encoder.modules())  # LoRA training keeps its train mode
    lora.eval()
    assert not any(m.training for m in lora.encoder.modules())
