"""Evaluate one image–text model on several held-out datasets: retrieval metrics and top-1 dumps.

Report text stays in memory and goes only to the dump files the user asks for; nothing here logs text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn

from cxr.evaluation.engine import EmbeddingEvalModule, EvalRuntime, build_eval_trainer
from cxr.labels import UncertainPolicy
from cxr.metrics.ranking import TieRule
from cxr.metrics.retrieval import ImageTextRetrieval, RetrievalDetails, RetrievalProtocol
from cxr.records import Split

log = logging.getLogger(__name__)

DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class RetrievalEvalOptions:
    """Settings of a retrieval evaluation (written next to the results)."""

    ks: tuple[int, ...] = (1, 5, 10)
    protocol: RetrievalProtocol = RetrievalProtocol.STUDY
    duplicate_texts_correct: bool = True
    tie_rule: TieRule = TieRule.PESSIMISTIC
    uncertain_policy: UncertainPolicy = UncertainPolicy.ZEROS
    exclude_support_devices: bool = False
    chunk_size: int | None = None  # score-tile edge; None: the metric's default (1024 CPU, 8192 CUDA)
    split: Split = Split.TEST
    max_batches: int | None = None
    zero_shot: bool = False  # also per-observation zero-shot AUROC from present/absent prompt pairs
    zero_shot_spec: object | None = None  # a cxr.evaluation.zero_shot.ZeroShotSpec (user classes/templates)


@dataclass
class Top1Row:
    """One image→text query and its top-1 retrieved report (for GREEN/RadGraph-style external scorers)."""

    query_study_key: str
    ground_truth_report: str
    retrieved_study_key: str
    retrieved_report: str
    retrieved_score: float
    rank: int  # 1-based rank of the first correct report (0 when the query had none)
    hit_at_1: bool


@dataclass
class DatasetResult:
    """Metrics per direction (``{"i2t": {...}, "t2i": {...}}``) and the image→text top-1 dump of one dataset."""

    name: str
    metrics: dict[str, dict[str, float]]
    top1: list[Top1Row] = field(default_factory=list)
    protocol: str = RetrievalProtocol.STUDY.value  # stated in every results table
    zero_shot: dict[str, float] = field(default_factory=dict)  # observation -> AUROC, plus "mean"


def _loader(dm: LightningDataModule, split: Split):
    dm.setup("test" if split is Split.TEST else "validate")
    if split is Split.TEST:
        return dm.test_dataloader()
    if split is Split.VAL:
        return dm.val_dataloader()
    raise ValueError("evaluation runs on the val or test split")


def _retrieval_metric(model: nn.Module, options: RetrievalEvalOptions) -> ImageTextRetrieval:
    normalize = bool(getattr(getattr(model, "loss_config", None), "normalize", True))
    return ImageTextRetrieval(ks=options.ks, protocol=options.protocol,
                              duplicate_texts_correct=options.duplicate_texts_correct,
                              chunk_size=options.chunk_size, tie_rule=options.tie_rule, normalize=normalize,
                              uncertain_policy=options.uncertain_policy,
                              exclude_support_devices=options.exclude_support_devices)


def _state(metric: ImageTextRetrieval, name: str) -> torch.Tensor:
    value = getattr(metric, name)  # a list of batches, or one tensor after a DDP sync
    return value if isinstance(value, torch.Tensor) else torch.cat(value)


def _first_per_sample(sample_index: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Rows of ``tensors`` de-duplicated by ``sample_index`` (DDP padding), sorted by it."""
    order = torch.argsort(sample_index, stable=True)
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = sample_index[order][1:] != sample_index[order][:-1]
    keep = order[first]
    return [t[keep] for t in tensors]


def finish_dataset(module: EmbeddingEvalModule, options: RetrievalEvalOptions) -> DatasetResult:
    """Score what ``module`` embedded (every rank calls this; the metric's states are gathered first)."""
    metric, name = module.metric, module.dataset_name
    with metric.sync_context():  # no-op in one process; under DDP every rank sees the whole set
        details = metric.compute_details()
        values = {k: float(v) for k, v in metric.summarize(details).items()}
        zs_inputs = None
        if options.zero_shot:
            zs_inputs = _first_per_sample(*(_state(metric, n) for n in ("sample_index", "image_emb", "labels")))
    metrics = {d: {k[len(d) + 1:]: v for k, v in values.items() if k.startswith(d + "_")} for d in DIRECTIONS}
    log.info("dataset %s: %d image→text queries, %d text→image queries", name,
             int(values["i2t_num_queries"]), int(values["t2i_num_queries"]))
    zero_shot = {}
    if zs_inputs is not None:
        zero_shot = zero_shot_for_dataset(module.model, zs_inputs[0], zs_inputs[1], metric.normalize,
                                          options.uncertain_policy, options.zero_shot_spec)
    return DatasetResult(name=name, metrics=metrics, top1=top1_rows(details, module.keys, module.texts),
                         zero_shot=zero_shot, protocol=options.protocol.value)


def evaluate_datasets(model: nn.Module, datasets: Mapping[str, LightningDataModule],
                      options: RetrievalEvalOptions = RetrievalEvalOptions(),
                      runtime: EvalRuntime | None = None, trainer: Trainer | None = None) -> list[DatasetResult]:
    """Embed each named DataModule's ``options.split`` with ``Trainer.test`` and score it, in order.

    ``model`` needs ``encode_images``/``encode_texts``; ``runtime`` picks device, precision and devices (a given
    ``trainer`` is used as is). A frozen cached text tower gets the split's texts embedded first. Under DDP
    every rank returns the same results.
    """
    trainer = trainer or build_eval_trainer(runtime or EvalRuntime(), options.max_batches)
    module = EmbeddingEvalModule(model, lambda: _retrieval_metric(model, options),
                                 lambda m: finish_dataset(m, options))
    results = []
    for name, dm in datasets.items():
        loader = _loader(dm, options.split)
        module.start(name, dm.texts(options.split) if hasattr(dm, "texts") else None)
        trainer.test(module, dataloaders=loader, verbose=False)
        if module.result is None:
            raise ValueError(f"dataset {name!r}: the {options.split.value} split yielded no samples")
        results.append(module.result)
    return results


def evaluate_dataset(model: nn.Module, dm: LightningDataModule, name: str,
                     options: RetrievalEvalOptions = RetrievalEvalOptions(),
                     runtime: EvalRuntime | None = None) -> DatasetResult:
    """:func:`evaluate_datasets` for one DataModule."""
    return evaluate_datasets(model, {name: dm}, options, runtime)[0]


def zero_shot_for_dataset(model: nn.Module, image_emb: torch.Tensor, labels: torch.Tensor,
                          normalize: bool = True, policy: UncertainPolicy = UncertainPolicy.ZEROS,
                          spec=None) -> dict[str, float]:
    """Zero-shot AUROC of every class with both classes among ``labels`` (others left out), plus "mean".

    Without ``spec``: the 13 CheXpert prompt pairs; with a binary ``ZeroShotSpec``: its classes (their ``label``
    names a CheXpert observation) and ensembled prompts. Prompts are embedded outside the report cache
    (``encode_prompts``). AUROC depends only on the order of p(present), which is monotone in
    s_present − s_absent for any scale > 0; scale 1 keeps that order exact where 100·cos would saturate to 1.0
    in float32 and tie (the number is the same as with 100 otherwise).
    """
    from dataclasses import replace

    from cxr.evaluation.zero_shot import (
        ZERO_SHOT_OBSERVATIONS,
        chexpert_targets,
        default_prompts,
        encode_prompts,
        evaluate_spec,
        zero_shot_evaluate,
    )

    def encode(texts: list[str]) -> torch.Tensor:
        return encode_prompts(model, texts)

    if spec is not None:
        targets, valid = chexpert_targets(labels, spec, policy)
        metrics = evaluate_spec(encode, image_emb, targets, replace(spec, scale=1.0), valid, normalize)
        return {k: v["auroc"] for k, v in metrics.items() if not math.isnan(v["auroc"])}
    values = zero_shot_evaluate(encode, image_emb, labels, default_prompts(ZERO_SHOT_OBSERVATIONS),
                                scale=1.0, policy=policy, normalize=normalize)
    return {k: v for k, v in values.items() if not math.isnan(v)}


def top1_rows(details: RetrievalDetails, keys: Mapping[int, str], texts: Mapping[int, str]) -> list[Top1Row]:
    """Image→text top-1 rows from :meth:`ImageTextRetrieval.compute_details` and per-sample keys/texts."""
    i2t = details.i2t
    sample_index = details.sample_index.tolist()
    q_rows, c_rows = i2t.query_rows.tolist(), i2t.candidate_rows.tolist()
    top = i2t.ranks.topk_indices[:, 0].tolist()
    scores = i2t.ranks.topk_scores[:, 0].tolist()
    ranks = i2t.ranks.ranks.tolist()
    rows = []
    for qi, q_row in enumerate(q_rows):
        q_sample = sample_index[q_row]
        r_sample = sample_index[c_rows[top[qi]]]
        rows.append(Top1Row(query_study_key=keys[q_sample], ground_truth_report=texts[q_sample],
                            retrieved_study_key=keys[r_sample], retrieved_report=texts[r_sample],
                            retrieved_score=float(scores[qi]), rank=ranks[qi] + 1, hit_at_1=ranks[qi] == 0))
    return rows


def metric_columns(results: Sequence[DatasetResult]) -> list[str]:
    """Union of the metric names over results, in first-seen order."""
    cols: dict[str, None] = {}
    for r in results:
        for d in DIRECTIONS:
            for k in r.metrics.get(d, {}):
                cols.setdefault(k, None)
    return list(cols)
