"""Text-cache fill under 2-process CPU DDP (gloo): each rank embeds its shard, rank 0 commits, ranks agree."""

from __future__ import annotations

import json
import os

import pytest
import torch
from _dist_helpers import run_gloo

# Duplicates on purpose: the shard split must de-duplicate before dividing the work.
TEXTS = [
    "[FINDINGS] The lungs are clear. [IMPRESSION] No acute process.",
    "[IMPRESSION] Small left pleural effusion.",
    "[FINDINGS] Heart size is normal.",
    "Large right pneumothorax with mediastinal shift.",
    "[IMPRESSION] Small left pleural effusion.",
    "[FINDINGS] Moderate cardiomegaly with mild pulmonary vascular congestion.",
    "[FINDINGS] Right lower lobe consolidation. [IMPRESSION] Pneumonia.",
    "Endotracheal tube tip is 4 cm above the carina.",
    "[FINDINGS] Heart size is normal.",
]
LATER = ["[IMPRESSION] Worsening bilateral effusions.", "Hyperinflated lungs consistent with emphysema.",
         "[FINDINGS] The lungs are clear. [IMPRESSION] No acute process."]


def _tower(encoder: str, cache_dir: str):
    from cxr.models.text.tower import TextTower

    return TextTower(encoder, use_cache=True, cache_dir=cache_dir, instruction="auto", encode_batch_size=2)


def _worker(rank: int, world: int, encoder: str, cache_dir: str, out_dir: str) -> None:
    from cxr.models.text.encoder import TextEncoder

    encoded: list[int] = []
    real_forward = TextEncoder.forward

    def counting_forward(self, features):  # how many texts THIS rank ran through the LLM
        encoded.append(len(features))
        return real_forward(self, features)

    TextEncoder.forward = counting_forward
    tower = _tower(encoder, cache_dir)
    first = tower.fill_cache(TEXTS)
    first_encoded = sum(encoded)
    released = tower.encoder is None
    second = tower.fill_cache(TEXTS)  # everything cached now: no rank loads the LLM
    again_built = tower.encoder is not None
    third = tower.fill_cache(TEXTS + LATER)  # only the new texts are embedded, again split
    third_encoded = sum(encoded) - first_encoded
    emb = tower(TEXTS + LATER)
    torch.save(emb, os.path.join(out_dir, f"emb{rank}.pt"))
    with open(os.path.join(out_dir, f"stats{rank}.json"), "w") as f:
        json.dump({"first": first, "first_encoded": first_encoded, "released": released, "second": second,
                   "again_built": again_built, "third": third, "third_encoded": third_encoded}, f)


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model):
    return tiny_text_model("llama", hidden_size=32, layers=1)


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
@pytest.mark.timeout(180)
def test_two_rank_fill_matches_single_process(tmp_path, tiny_llama) -> None:
    from cxr.models.text.cache import MANIFEST, TextEmbeddingCache

    cache_dir, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    run_gloo(_worker, str(tiny_llama), str(cache_dir), str(out))

    stats = [json.loads((out / f"stats{r}.json").read_text()) for r in range(2)]
    unique = len(dict.fromkeys(TEXTS))
    new_later = len(set(LATER) - set(TEXTS))
    for s in stats:  # every rank reports the global count of newly embedded texts
        assert s["first"] == unique and s["second"] == 0 and s["third"] == new_later
        assert s["released"] and not s["again_built"]
    # the work was split: ranks embedded disjoint halves (missing[rank::2]) of the unique texts
    assert [s["first_encoded"] for s in stats] == [(unique + 1) // 2, unique // 2]
    assert [s["third_encoded"] for s in stats] == [(new_later + 1) // 2, new_later // 2]

    emb0, emb1 = (torch.load(out / f"emb{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(emb0, emb1)  # both ranks read the same committed rows

    # the committed manifest lists the four shards (2 fills × 2 ranks), and a fresh reader sees every text
    tower = _tower(str(tiny_llama), str(cache_dir))
    manifest = json.loads((tower.cache.directory / MANIFEST).read_text())
    assert len(manifest["shards"]) == 4
    assert sum(s["rows"] for s in manifest["shards"]) == unique + new_later
    fresh = TextEmbeddingCache(cache_dir, tower.fingerprint())
    assert torch.equal(fresh.lookup(tower.keys(TEXTS + LATER)), emb0)

    # equal to a single-process fill (batching differs, so up to float rounding)
    single = _tower(str(tiny_llama), str(tmp_path / "single"))
    assert single.fill_cache(TEXTS + LATER) == unique + new_later
    ref = single(TEXTS + LATER)
    assert ref.abs().sum() > 0 and not torch.equal(ref[0], ref[1])  # not a vacuous comparison
    torch.testing.assert_close(emb0, ref, atol=1e-5, rtol=1e-5)
