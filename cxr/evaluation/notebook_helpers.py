"""Small, tested helpers behind ``notebooks/`` (embedding maps, retrieval examples), so the notebooks stay thin.

Inputs are what ``train.py predict`` writes with :class:`~cxr.callbacks.embedding_writer.EmbeddingWriter`
(``embeddings[.rankR].safetensors`` + ``meta[.rankR].csv``, no text) and, for retrieval examples, the run's
``config.yaml``: its DataModule is rebuilt to read the images and reports back **in memory only**. Nothing here
logs report text or pixels; the notebooks show them to the user who owns the data.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.labels import CHEXPERT_OBSERVATIONS

#: Observations a map is coloured by, in priority order (a study with several shows the first one).
KEY_FINDINGS: tuple[str, ...] = ("Pneumothorax", "Pleural Effusion", "Cardiomegaly", "Edema", "Support Devices")
NO_FINDING = "No Finding"
OTHER_FINDINGS = "Other findings"


class Modality(str, Enum):
    """Which tower a point of the joint map comes from."""

    IMAGE = "image"
    TEXT = "text"


@dataclass
class Predictions:
    """Embeddings of one ``predict`` run, one row per sample (sorted by ``sample_index``, DDP duplicates dropped).

    ``meta`` holds ``study_key``, ``source``, ``sample_index`` and the 14 four-state CheXpert labels
    (1 / 0 / -1 / -2 = not mentioned), plus ``text`` only if the writer was told to include it.
    """

    directory: Path
    image_emb: np.ndarray
    text_emb: np.ndarray
    study_ids: np.ndarray
    sample_index: np.ndarray
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.sample_index)


def load_predictions(directory: str | Path) -> Predictions:
    """Read every ``embeddings*.safetensors`` / ``meta*.csv`` pair in ``directory`` (one per DDP rank)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    files = sorted(directory.glob("embeddings*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no embeddings*.safetensors in {directory}: run `python train.py predict --config "
                                f"CONFIG --ckpt_path CKPT --trainer.callbacks+=cxr.callbacks.embedding_writer."
                                f"EmbeddingWriter --trainer.callbacks.output_dir {directory}` first")
    parts, metas = [], []
    for path in files:
        meta_path = path.with_name(path.name.replace("embeddings", "meta", 1).replace(".safetensors", ".csv"))
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} has no matching {meta_path.name} in {directory}")
        tensors = load_file(str(path))
        missing = {"image_emb", "text_emb", "study_ids", "sample_index"} - set(tensors)
        if missing:
            raise ValueError(f"{path}: missing tensors {sorted(missing)} (not written by EmbeddingWriter?)")
        meta = pd.read_csv(meta_path, dtype={"study_key": str, "source": str}, keep_default_na=False)
        absent = {"study_key", "source", "sample_index", *CHEXPERT_OBSERVATIONS} - set(meta.columns)
        if absent:
            raise ValueError(f"{meta_path}: missing columns {sorted(absent)}")
        n = len(tensors["sample_index"])
        if not (len(meta) == n == len(tensors["image_emb"]) == len(tensors["text_emb"])):
            raise ValueError(f"{path} ({n} samples) and {meta_path} ({len(meta)} rows) disagree")
        if not np.array_equal(meta["sample_index"].to_numpy(), tensors["sample_index"]):
            raise ValueError(f"{meta_path}: sample_index column differs from {path.name}")
        parts.append(tensors)
        metas.append(meta)
    sample_index = np.concatenate([p["sample_index"] for p in parts])
    # DistributedSampler pads ranks with repeats of the same samples: keep the first copy, order by index.
    _, keep = np.unique(sample_index, return_index=True)
    meta = pd.concat(metas, ignore_index=True).iloc[keep].reset_index(drop=True)
    return Predictions(directory=directory,
                       image_emb=np.concatenate([p["image_emb"] for p in parts])[keep].astype(np.float32),
                       text_emb=np.concatenate([p["text_emb"] for p in parts])[keep].astype(np.float32),
                       study_ids=np.concatenate([p["study_ids"] for p in parts])[keep],
                       sample_index=sample_index[keep], meta=meta)


def finding_groups(meta: pd.DataFrame, findings: Sequence[str] = KEY_FINDINGS) -> list[str]:
    """One colour group per sample: its first positive finding of ``findings``, else ``No Finding`` (when that
    label is positive), else ``Other findings``. Uncertain (-1) counts as not positive."""
    unknown = [f for f in (*findings, NO_FINDING) if f not in meta.columns]
    if unknown:
        raise ValueError(f"meta has no label columns {unknown}")
    positive = meta[list(findings)].to_numpy() == 1
    no_finding = meta[NO_FINDING].to_numpy() == 1
    groups = []
    for row, nf in zip(positive, no_finding, strict=False):
        hit = np.flatnonzero(row)
        groups.append(findings[hit[0]] if hit.size else (NO_FINDING if nf else OTHER_FINDINGS))
    return groups


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class JointMap:
    """2-D coordinates of images and texts in one t-SNE map.

    ``xy[i]`` is a point of ``modality[i]`` for prediction row ``rows[i]`` (images first, then texts).
    """

    xy: np.ndarray
    modality: np.ndarray
    rows: np.ndarray


def joint_tsne(pred: Predictions, seed: int = 0, max_samples: int = 1000, perplexity: float = 30.0) -> JointMap:
    """t-SNE (scikit-learn, seeded) of L2-normalised image and text embeddings together.

    At most ``max_samples`` samples (a seeded subset) are mapped, i.e. twice as many points.
    """
    from sklearn.manifold import TSNE

    n = len(pred)
    if n < 2:
        raise ValueError(f"{pred.directory}: {n} sample(s); a map needs at least 2")
    rows = np.arange(n)
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    points = np.concatenate([_unit(pred.image_emb[rows]), _unit(pred.text_emb[rows])])
    # sklearn requires perplexity < number of points; small demo sets get a proportionally small one.
    perp = float(min(perplexity, max(1.0, (len(points) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(points)
    modality = np.array([Modality.IMAGE.value] * len(rows) + [Modality.TEXT.value] * len(rows))
    return JointMap(xy=xy.astype(np.float32), modality=modality, rows=np.concatenate([rows, rows]))


_MARKERS = {Modality.IMAGE.value: "o", Modality.TEXT.value: "^"}


def plot_joint_map(jmap: JointMap, groups: Sequence[str], title: str, ax=None,
                   palette: Mapping[str, str] | None = None):
    """Scatter the joint map coloured by ``groups`` (one per prediction row); circles = images, triangles =
    texts. ``palette`` fixes group colours and drawing order (later groups on top). Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    groups = np.asarray(groups, dtype=object)[jmap.rows]
    names = list(dict.fromkeys(groups.tolist()))
    if palette is not None:
        names = [n for n in palette if n in names] + [n for n in names if n not in palette]
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    handles = []
    for gi, name in enumerate(names):
        colour = (palette or {}).get(name, cmap(gi % cmap.N))
        for mod, marker in _MARKERS.items():
            sel = (groups == name) & (jmap.modality == mod)
            if sel.any():
                ax.scatter(jmap.xy[sel, 0], jmap.xy[sel, 1], s=14, marker=marker, color=colour, alpha=0.75)
        count = int((groups == name).sum()) // 2  # each sample is two points (image + text)
        handles.append(Line2D([], [], ls="", marker="s", color=colour, label=f"{name} (n={count})"))
    handles += [Line2D([], [], ls="", marker=m, color="grey", label=mod) for mod, m in _MARKERS.items()]
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)
    return ax.figure


def save_figure(fig, out_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``out_dir/name.png`` (folder created) and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------- retrieval examples
@dataclass
class SampleData:
    """Report text, text id and image path of each prediction row, read back through the run's DataModule."""

    texts: list[str]
    text_ids: np.ndarray
    image_paths: list[str]


def load_sample_data(pred: Predictions, run_config: str | Path) -> SampleData:
    """Rebuild the DataModule of ``run_config`` (a ``train.py`` config with a ``data`` section) and look up each
    prediction row's sample in its predict (test) split; errors if the run's data no longer matches."""
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule

    dm = build_eval_datamodule(EvalDatasetSpec(name="run", config=Path(run_config)))
    dm.setup("predict")
    dataset = dm.predict_dataloader().dataset
    for attr in ("items", "records", "texts", "text_ids"):
        if not hasattr(dataset, attr):
            raise TypeError(f"{run_config}: the predict dataset {type(dataset).__name__} has no {attr!r}; "
                            f"retrieval examples need cxr's ImageTextDataset")
    texts, text_ids, paths = [], [], []
    for row, (index, key) in enumerate(zip(pred.sample_index.tolist(), pred.meta["study_key"], strict=False)):
        if index >= len(dataset):
            raise ValueError(f"meta row {row}: sample_index {index} is beyond the {len(dataset)} predict samples "
                             f"of {run_config}; the embeddings come from different data")
        item = dataset.items[index]
        record = dataset.records[item.record_index]
        if record.key != key:
            raise ValueError(f"meta row {row}: sample_index {index} is study {key!r} in the embeddings but "
                             f"{record.key!r} in {run_config}; the embeddings come from different data")
        texts.append(dataset.texts[item.record_index])
        text_ids.append(dataset.text_ids[item.record_index])
        paths.append(str(item.images[0].path))
    return SampleData(texts=texts, text_ids=np.asarray(text_ids, dtype=np.int64), image_paths=paths)


def run_uses_normalized_scores(run_config: str | Path) -> bool:
    """Whether the run's model scores by cosine (``loss.normalize``, default true) or by raw dot product."""
    import yaml

    with open(run_config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    loss = ((cfg.get("model") or {}).get("init_args") or {}).get("loss") or {}
    loss = loss.get("init_args", loss) if isinstance(loss, dict) else {}
    return bool(loss.get("normalize", True))


@dataclass
class RetrievedReport:
    """One retrieved report: correct if it is the query's study or an identical report text."""

    study_key: str
    text: str
    score: float
    correct: bool


@dataclass
class RetrievalExample:
    """An image query, its own report, the rank of its first correct report (1-based) and the top-k."""

    row: int
    study_key: str
    image_path: str
    report: str
    rank: int
    retrieved: list[RetrievedReport]


@dataclass
class RetrievalSummary:
    """Image→text Recall@1 / Recall@k (hit rate) over all study-level queries of the prediction set."""

    num_queries: int
    k: int
    recall_at_1: float
    recall_at_k: float


def retrieval_examples(pred: Predictions, data: SampleData, num_queries: int = 4, k: int = 3, seed: int = 0,
                       normalize: bool = True) -> tuple[list[RetrievalExample], RetrievalSummary]:
    """Image→report top-``k`` for ``num_queries`` seeded query images, scored like ``eval.py`` (study protocol,
    identical reports count as correct, pessimistic ties) with :class:`~cxr.metrics.retrieval.ImageTextRetrieval`."""
    import torch

    from cxr.metrics.retrieval import ImageTextRetrieval

    metric = ImageTextRetrieval(ks=(1, k), protocol="study", normalize=normalize)
    metric.update(torch.from_numpy(pred.image_emb), torch.from_numpy(pred.text_emb),
                  torch.from_numpy(pred.study_ids), torch.from_numpy(data.text_ids),
                  torch.from_numpy(pred.sample_index))
    details = metric.compute_details(topk=k)
    if not np.array_equal(details.sample_index.numpy(), pred.sample_index):
        raise RuntimeError("retrieval rows do not line up with the prediction rows")
    i2t = details.i2t
    q_rows, c_rows = i2t.query_rows.numpy(), i2t.candidate_rows.numpy()
    ranks = i2t.ranks.ranks.numpy()
    pick = np.sort(np.random.default_rng(seed).choice(len(q_rows), size=min(num_queries, len(q_rows)),
                                                      replace=False))
    keys = pred.meta["study_key"].tolist()
    examples = []
    for qi in pick.tolist():
        q = int(q_rows[qi])
        retrieved = []
        for ci, score in zip(i2t.ranks.topk_indices[qi].tolist(), i2t.ranks.topk_scores[qi].tolist(), strict=False):
            c = int(c_rows[ci])
            correct = bool(pred.study_ids[c] == pred.study_ids[q] or data.text_ids[c] == data.text_ids[q])
            retrieved.append(RetrievedReport(study_key=keys[c], text=data.texts[c], score=float(score),
                                             correct=correct))
        examples.append(RetrievalExample(row=q, study_key=keys[q], image_path=data.image_paths[q],
                                         report=data.texts[q], rank=int(ranks[qi]) + 1 if ranks[qi] >= 0 else 0,
                                         retrieved=retrieved))
    summary = RetrievalSummary(num_queries=len(q_rows), k=k, recall_at_1=float((ranks == 0).mean()),
                               recall_at_k=float(((ranks >= 0) & (ranks < k)).mean()))
    return examples, summary


def _clip(text: str, width: int, max_lines: int) -> str:
    lines = textwrap.wrap(" ".join(text.split()), width=width) or [""]
    return "\n".join(lines[:max_lines]) + (" …" if len(lines) > max_lines else "")


def plot_retrieval_example(example: RetrievalExample, width: int = 80, max_lines: int = 4):
    """The query image next to its own report and the top-k retrieved reports (score, HIT/miss)."""
    import matplotlib.pyplot as plt

    from cxr.data.images import load_image

    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 2.4]})
    ax_img.imshow(load_image(example.image_path), cmap="gray", vmin=0.0, vmax=1.0)
    ax_img.set_title(f"query {example.study_key}", fontsize=9)
    ax_img.axis("off")
    ax_txt.axis("off")
    blocks = [(f"Own report (first correct at rank {example.rank or 'none'}):\n"
               f"{_clip(example.report, width, max_lines)}", "black")]
    for i, r in enumerate(example.retrieved, 1):
        verdict = "HIT" if r.correct else "miss"
        blocks.append((f"#{i}  score {r.score:.3f}  {verdict}  ({r.study_key})\n{_clip(r.text, width, max_lines)}",
                       "tab:green" if r.correct else "tab:red"))
    y = 1.0
    for text, colour in blocks:
        ax_txt.text(0.0, y, text, va="top", ha="left", fontsize=8, color=colour, family="monospace",
                    transform=ax_txt.transAxes)
        y -= (text.count("\n") + 2) * 0.045
    fig.tight_layout()
    return fig
