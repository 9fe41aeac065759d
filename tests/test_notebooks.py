"""Notebooks and their helpers on real demo outputs: a tiny CLIPAlignModule trained a few steps on the synthetic
world, ``train.py predict`` with the EmbeddingWriter, then both notebooks executed headless with nbclient."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_clip_run import predict_embeddings, train_tiny_clip

from cxr.evaluation import notebook_helpers as nh
from cxr.labels import CHEXPERT_OBSERVATIONS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, synthetic_dataset) -> tuple[Path, Path, Path]:
    """(embeddings dir, predict config.yaml, manifest) of a tiny trained run."""
    world = synthetic_dataset("csv", num_studies=100, seed=0, image_size=64)
    tmp = tmp_path_factory.mktemp("nbdemo")
    run = train_tiny_clip(tmp, world / "manifest.csv", max_steps=3)
    config = predict_embeddings(run, tmp / "predict", tmp / "predict_log")
    return tmp / "predict", config, world / "manifest.csv"


def _manifest_labels(manifest: Path) -> pd.DataFrame:
    m = pd.read_csv(manifest, dtype={"study_id": str, "split": str})
    m = m.drop_duplicates("study_id").set_index("study_id")
    return m


def test_predictions_are_the_test_split_with_manifest_labels(demo):
    pred_dir, _, manifest = demo
    pred = nh.load_predictions(pred_dir)
    m = _manifest_labels(manifest)
    rows = pd.read_csv(manifest, dtype={"study_id": str})
    # predict = the test split, one frontal image per study (lateral-only studies are left out by default)
    test_ids = set(rows.loc[(rows["split"] == "test") & (rows["view"] != "LATERAL"), "study_id"])
    assert 0 < len(test_ids) < (m["split"] == "test").sum() + 1
    ids = [k.split(":", 1)[1] for k in pred.meta["study_key"]]
    assert set(ids) == test_ids and len(pred) == len(test_ids)
    assert list(pred.sample_index) == sorted(pred.sample_index) and pred.image_emb.shape == pred.text_emb.shape
    expected = m.loc[ids, list(CHEXPERT_OBSERVATIONS)].fillna(-2).to_numpy().astype(int)
    assert np.array_equal(pred.meta[list(CHEXPERT_OBSERVATIONS)].to_numpy(), expected)
    assert "text" not in pred.meta.columns  # the writer keeps report text out by default


def test_load_predictions_merges_ranks_and_names_bad_files(demo, tmp_path):
    pred_dir, _, _ = demo
    full = nh.load_predictions(pred_dir)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        (tmp_path / "empty").mkdir()
        nh.load_predictions(tmp_path / "empty")
    # two "ranks", the second padded with a duplicate of the first sample (DistributedSampler padding)
    from safetensors.numpy import load_file, save_file

    t = load_file(str(pred_dir / "embeddings.safetensors"))
    meta = pd.read_csv(pred_dir / "meta.csv")
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    h = len(meta) // 2
    parts = {0: np.arange(h), 1: np.r_[np.arange(h, len(meta)), 0]}
    for rank, rows in parts.items():
        save_file({k: np.ascontiguousarray(v[rows]) for k, v in t.items()},
                  str(ddp / f"embeddings.rank{rank}.safetensors"))
        meta.iloc[rows].to_csv(ddp / f"meta.rank{rank}.csv", index=False)
    merged = nh.load_predictions(ddp)
    assert np.array_equal(merged.sample_index, full.sample_index)
    assert np.allclose(merged.image_emb, full.image_emb) and merged.meta.equals(full.meta)
    meta.iloc[:-1].to_csv(ddp / "meta.rank1.csv", index=False)
    with pytest.raises(ValueError, match="meta.rank1.csv"):
        nh.load_predictions(ddp)
    (ddp / "meta.rank1.csv").unlink()
    with pytest.raises(FileNotFoundError, match="meta.rank1.csv"):
        nh.load_predictions(ddp)


def test_finding_groups_take_the_first_key_finding():
    meta = pd.DataFrame({o: [-2, -2, -2, -2] for o in CHEXPERT_OBSERVATIONS})
    meta.loc[0, ["Cardiomegaly", "Pneumothorax"]] = 1  # Pneumothorax comes first in KEY_FINDINGS
    meta.loc[1, "No Finding"] = 1
    meta.loc[2, ["Edema", "Fracture"]] = [-1, 1]  # uncertain is not positive; Fracture is not a key finding
    meta.loc[3, "Support Devices"] = 1
    assert nh.finding_groups(meta) == ["Pneumothorax", nh.NO_FINDING, nh.OTHER_FINDINGS, "Support Devices"]
    with pytest.raises(ValueError, match="Nodule"):
        nh.finding_groups(meta, findings=("Nodule",))


def test_joint_tsne_is_seeded_and_maps_both_towers(demo):
    pred = nh.load_predictions(demo[0])
    a = nh.joint_tsne(pred, seed=0, max_samples=12)
    b = nh.joint_tsne(pred, seed=0, max_samples=12)
    assert a.xy.shape == (24, 2) and np.array_equal(a.xy, b.xy) and np.array_equal(a.rows, b.rows)
    assert list(a.modality).count("image") == 12 and np.array_equal(a.rows[:12], a.rows[12:])
    assert np.isfinite(a.xy).all() and a.xy.std(axis=0).min() > 0


def test_retrieval_examples_match_brute_force_ranking(demo):
    pred_dir, config, _ = demo
    pred = nh.load_predictions(pred_dir)
    data = nh.load_sample_data(pred, config)
    assert all(t.strip() for t in data.texts) and all(Path(p).is_file() for p in data.image_paths)
    examples, summary = nh.retrieval_examples(pred, data, num_queries=5, k=3, seed=1, normalize=True)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(pred.image_emb.astype(np.float64)) @ unit(pred.text_emb.astype(np.float64)).T
    correct = ((pred.study_ids[:, None] == pred.study_ids[None, :])
               | (data.text_ids[:, None] == data.text_ids[None, :]))
    # one image and one report per study here, so the study protocol is the full matrix
    best = np.where(correct, sim, -np.inf).max(1)
    ranks = (np.where(~correct, sim, -np.inf) >= best[:, None]).sum(1)  # pessimistic ties
    assert summary.num_queries == len(pred)
    assert summary.recall_at_1 == pytest.approx((ranks == 0).mean())
    assert summary.recall_at_k == pytest.approx((ranks < 3).mean())
    assert len(examples) == 5 and len({e.row for e in examples}) == 5
    for e in examples:
        order = np.argsort(-sim[e.row])[:3]
        assert [r.study_key for r in e.retrieved] == pred.meta["study_key"].iloc[order].tolist()
        assert [r.score for r in e.retrieved] == pytest.approx(sim[e.row, order].tolist(), abs=1e-5)
        assert [r.correct for r in e.retrieved] == correct[e.row, order].tolist()
        assert e.rank == ranks[e.row] + 1 and e.report == data.texts[e.row]


def test_sample_data_refuses_embeddings_from_other_data(demo, tmp_path):
    pred_dir, config, _ = demo
    pred = nh.load_predictions(pred_dir)
    pred.meta.loc[2, "study_key"] = "synth:00000000"
    with pytest.raises(ValueError, match="meta row 2"):
        nh.load_sample_data(pred, config)
    assert nh.run_uses_normalized_scores(config) is True


def _execute(name: str, env: dict[str, str]):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the parent's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _pngs(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebooks_execute_headless_and_save_figures(demo, tmp_path):
    pred_dir, config, _ = demo
    figs = tmp_path / "figures"
    env = {"CXR_EMBEDDINGS_DIR": str(pred_dir), "CXR_RUN_CONFIG": str(config), "CXR_FIGURES_DIR": str(figs),
           "CXR_NUM_QUERIES": "3"}
    nb = _execute("embeddings.ipynb", env)
    assert _pngs(nb) >= 4
    assert {p.name for p in figs.glob("*.png")} >= {"tsne_by_finding.png", "tsne_by_source.png",
                                                  "tsne_per_finding.png", "similarity_matched_vs_random.png"}
    nb = _execute("retrieval_examples.ipynb", env)
    assert _pngs(nb) == 3
    assert sorted(p.name for p in figs.glob("retrieval_example_*.png")) == [
        f"retrieval_example_{i}.png" for i in range(3)]
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "image queries" in printed and "R@3" in printed


@pytest.mark.parametrize("name", ["embeddings.ipynb", "retrieval_examples.ipynb"])
def test_committed_notebooks_have_no_outputs(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert 'os.environ.get("CXR_EMBEDDINGS_DIR"' in code[0].source
