"""Zero-shot classification: prompt pairs per observation, or user classes and prompt templates from YAML.

Binary (multi-label) mode: score of class c for image i is ``softmax(scale · [s(i, positive_c), s(i, negative_c)])[0]``
(the early LLM2CLIP4CXR code: "pneumonia is present" / "there is no pneumonia", logits = 100·cos). Multi-class
mode: ``softmax(scale · s(i, class_c))`` over the classes. A class's prompts (its templates filled with its names,
or its own list) are ensembled as open_clip does: each prompt embedding is L2-normalised, the mean is taken and
renormalised. ``s`` is the cosine, or the raw dot product for models trained with ``loss.normalize: false``.
Prompts are embedded by the encoder directly, outside the report cache (see :func:`encode_prompts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

from cxr.labels import CHEXPERT_OBSERVATIONS, OBSERVATION_INDEX, UncertainPolicy, binarize

#: Observations eval.py scores zero-shot ("No Finding" has no sensible "<finding> is present" prompt).
ZERO_SHOT_OBSERVATIONS: tuple[str, ...] = tuple(o for o in CHEXPERT_OBSERVATIONS if o != "No Finding")


@dataclass(frozen=True)
class PromptPair:
    """The two prompts of one observation."""

    observation: str
    present: str
    absent: str


def default_prompts(observations: Sequence[str]) -> list[PromptPair]:
    """``"<finding> is present"`` / ``"there is no <finding>"`` for each observation."""
    return [PromptPair(o, f"{o.lower()} is present", f"there is no {o.lower()}") for o in observations]


def zero_shot_scores(image_emb: torch.Tensor, present_emb: torch.Tensor, absent_emb: torch.Tensor,
                     scale: float = 100.0, normalize: bool = True) -> torch.Tensor:
    """``(N, C)`` probability of "present" for N images and C prompt pairs."""
    if normalize:
        image_emb, present_emb, absent_emb = (F.normalize(t.float(), dim=-1)
                                              for t in (image_emb, present_emb, absent_emb))
    logits = torch.stack([image_emb @ present_emb.T, image_emb @ absent_emb.T], dim=-1) * scale
    return logits.softmax(dim=-1)[..., 0]


def zero_shot_auroc(scores: torch.Tensor, labels: torch.Tensor, observations: Sequence[str],
                    policy: UncertainPolicy | str = UncertainPolicy.ZEROS) -> dict[str, float]:
    """AUROC per observation (NaN when the evaluated set lacks positives or negatives) and their mean.

    ``labels`` are ``(N, 14)`` four-state CheXpert labels; NOT_MENTIONED counts as negative and UNCERTAIN
    follows ``policy`` (``ignore`` leaves those images out for that observation).
    """
    positive, valid = binarize(torch.as_tensor(labels), policy)
    out: dict[str, float] = {}
    for c, obs in enumerate(observations):
        j = OBSERVATION_INDEX[obs]
        keep = valid[:, j]
        y, s = positive[keep, j], scores[keep, c]
        out[obs] = float(binary_auroc(s, y.long())) if 0 < int(y.sum()) < y.numel() else float("nan")
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(finite) / len(finite) if finite else float("nan")
    return out


@torch.no_grad()
def zero_shot_evaluate(encode_texts: Callable[[list[str]], torch.Tensor], image_emb: torch.Tensor,
                       labels: torch.Tensor, prompts: Sequence[PromptPair], scale: float = 100.0,
                       policy: UncertainPolicy | str = UncertainPolicy.ZEROS,
                       normalize: bool = True) -> dict[str, float]:
    """Embed the prompts with ``encode_texts`` (e.g. ``CLIPAlignModule.encode_texts``) and score ``image_emb``.

    ``normalize=False`` scores by raw dot product (models trained with ``loss.normalize: false``).
    """
    present = encode_texts([p.present for p in prompts]).float().cpu()
    absent = encode_texts([p.absent for p in prompts]).float().cpu()
    scores = zero_shot_scores(image_emb.float().cpu(), present, absent, scale, normalize)
    return zero_shot_auroc(scores, labels, [p.observation for p in prompts], policy)


# ------------------------------------------------------------------------------------- user classes and templates
class ZeroShotMode(str, Enum):
    """``binary``: every class is positive-vs-negative prompts (multi-label); ``multiclass``: softmax over classes."""

    BINARY = "binary"
    MULTICLASS = "multiclass"


@dataclass(frozen=True)
class ZeroShotClass:
    """One class: its ``label`` (a label-file column, a CheXpert observation, or the value in a single label column
    in multi-class mode) and its prompts (``negative`` is used in binary mode only)."""

    name: str
    label: str
    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZeroShotSpec:
    """Classes and prompts of a zero-shot task (see :func:`load_zero_shot_spec` for the YAML)."""

    mode: ZeroShotMode
    classes: tuple[ZeroShotClass, ...]
    scale: float = 100.0
    label_column: str = "label"  # multi-class: the one column holding each image's class
    source: str = field(default="<spec>", compare=False)


def _str_list(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise ValueError(f"{where} must be a non-empty string or list of non-empty strings, got {value!r}")
    return tuple(t.strip() for t in items)


def _fill(templates: Sequence[str], names: Sequence[str], where: str) -> tuple[str, ...]:
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"{where}: each template needs exactly one '{{}}' for the class name, got {bad}")
    return tuple(t.replace("{}", n) for t in templates for n in names)


def _parse_class(key: str, body: object, mode: ZeroShotMode, templates: Mapping[str, tuple[str, ...]],
                 where: str) -> ZeroShotClass:
    if body is None:
        body = {}
    if isinstance(body, (str, list)):  # shorthand: the class's own positive prompts
        body = {"positive": body}
    if not isinstance(body, dict):
        raise ValueError(f"{where}: class {key!r} must be a mapping, got {type(body).__name__}")
    unknown = set(body) - {"label", "names", "positive", "negative", "prompts"}
    if unknown:
        raise ValueError(f"{where}: class {key!r} has unknown fields {sorted(unknown)}")
    names = _str_list(body.get("names", [key]), f"{where}: classes.{key}.names")
    own = body.get("positive", body.get("prompts"))
    kinds = ("positive", "negative") if mode is ZeroShotMode.BINARY else ("positive",)
    prompts: dict[str, tuple[str, ...]] = {}
    for kind in kinds:
        given = own if kind == "positive" else body.get("negative")
        if given is not None:
            prompts[kind] = _str_list(given, f"{where}: classes.{key}.{kind}")
        elif templates.get(kind):
            prompts[kind] = _fill(templates[kind], [n.lower() for n in names], f"{where}: templates.{kind}")
        else:
            raise ValueError(f"{where}: class {key!r} has no {kind} prompts and there are no {kind} templates")
    label = str(body.get("label", key))
    return ZeroShotClass(name=str(key), label=label, positive=prompts["positive"],
                         negative=prompts.get("negative", ()))


def parse_zero_shot_spec(cfg: object, where: str = "<spec>") -> ZeroShotSpec:
    """Build a :class:`ZeroShotSpec` from a parsed YAML mapping (errors name ``where`` and the field)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: a zero-shot spec is a mapping with 'classes', got {type(cfg).__name__}")
    unknown = set(cfg) - {"mode", "scale", "templates", "classes", "label_column"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    try:
        mode = ZeroShotMode(str(cfg.get("mode", "binary")).lower())
    except ValueError:
        raise ValueError(f"{where}: mode must be 'binary' or 'multiclass', got {cfg.get('mode')!r}") from None
    raw = cfg.get("templates") or {}
    if isinstance(raw, (str, list)):
        raw = {"positive": raw}
    if not isinstance(raw, dict) or set(raw) - {"positive", "negative"}:
        raise ValueError(f"{where}: templates must be a list (positive) or a mapping with positive/negative")
    templates = {k: _str_list(v, f"{where}: templates.{k}") for k, v in raw.items()}
    classes_cfg = cfg.get("classes")
    if isinstance(classes_cfg, list):  # a plain list of class names
        classes_cfg = {str(c): None for c in classes_cfg}
    if not isinstance(classes_cfg, dict) or not classes_cfg:
        raise ValueError(f"{where}: 'classes' must be a non-empty mapping (or list) of classes")
    classes = tuple(_parse_class(str(k), v, mode, templates, where) for k, v in classes_cfg.items())
    if mode is ZeroShotMode.MULTICLASS and len(classes) < 2:
        raise ValueError(f"{where}: multiclass mode needs at least two classes")
    labels = [c.label for c in classes]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: class labels must be unique, got {labels}")
    scale = float(cfg.get("scale", 100.0))
    if not scale > 0:
        raise ValueError(f"{where}: scale must be > 0, got {scale}")
    return ZeroShotSpec(mode=mode, classes=classes, scale=scale, label_column=str(cfg.get("label_column", "label")),
                        source=where)


def load_zero_shot_spec(path: str | Path) -> ZeroShotSpec:
    """Read a zero-shot YAML::

        mode: binary                  # or multiclass (softmax over the classes)
        scale: 100                    # softmax temperature (AUROC does not depend on it)
        templates:                    # '{}' = each of the class's names (lower-cased)
          positive: ["{} is present", "findings consistent with {}"]
          negative: ["there is no {}", "no evidence of {}"]
        label_column: label           # multiclass: the CSV column holding each image's class
        classes:
          Pneumonia: {}               # label = the key; prompts from the templates
          Effusion:
            label: Pleural Effusion   # label-file column / CheXpert observation (multiclass: the class value)
            names: [pleural effusion, effusion]
            negative: ["the costophrenic angles are sharp"]   # own prompts replace the templates
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"zero-shot spec not found: {p}")
    with open(p, encoding="utf-8") as fh:
        return parse_zero_shot_spec(yaml.safe_load(fh), str(p))


def ensemble_embeddings(embeddings: torch.Tensor, groups: Sequence[int], normalize: bool = True) -> torch.Tensor:
    """open_clip's template ensembling: rows are prompt embeddings, ``groups[k]`` consecutive rows belong to class
    k; each row is L2-normalised, the rows of a class are averaged and the mean renormalised. With
    ``normalize=False`` (dot-product models) the raw rows are averaged."""
    if sum(groups) != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} prompt embeddings for groups of total {sum(groups)}")
    emb = F.normalize(embeddings.float(), dim=-1) if normalize else embeddings.float()
    means = torch.stack([chunk.mean(0) for chunk in torch.split(emb, list(groups))])
    return F.normalize(means, dim=-1) if normalize else means


def encode_prompts(model, texts: Sequence[str]) -> torch.Tensor:
    """Embed prompts in the model's joint space without touching the report cache.

    A ``CLIPAlignModule`` with a cached frozen encoder would look every prompt up in the cache, miss, warn and
    encode it online; here the encoder runs directly (built for the call and released again when the model works
    from the cache) and the text adapter maps the features. Other modules fall back to ``encode_texts``.
    """
    text, adapter = getattr(model, "text", None), getattr(model, "text_adapter", None)
    if text is None or adapter is None or not hasattr(text, "encode_online"):
        return model.encode_texts(list(texts)).float()
    device = next(adapter.parameters()).device
    built_here = getattr(text, "encoder", None) is None
    if built_here:
        text.build_encoder().to(device)
    try:
        with torch.no_grad():
            feats = text.encode_online(list(texts))
            return adapter(feats.to(device)).float()
    finally:
        if built_here and getattr(text, "uses_cache", False):
            text.release_encoder()


@torch.no_grad()
def class_embeddings(encode: Callable[[list[str]], torch.Tensor], spec: ZeroShotSpec,
                     normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ensembled ``(C, D)`` positive (class) embeddings and, in binary mode, negative ones."""
    pos = [p for c in spec.classes for p in c.positive]
    positive = ensemble_embeddings(encode(pos).float().cpu(), [len(c.positive) for c in spec.classes], normalize)
    if spec.mode is not ZeroShotMode.BINARY:
        return positive, None
    neg = [p for c in spec.classes for p in c.negative]
    negative = ensemble_embeddings(encode(neg).float().cpu(), [len(c.negative) for c in spec.classes], normalize)
    return positive, negative


def spec_scores(image_emb: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None, spec: ZeroShotSpec,
                normalize: bool = True) -> torch.Tensor:
    """``(N, C)`` float64 **log**-probabilities: log p(positive) per class (binary: log-softmax over the class's
    positive/negative pair) or the log-softmax over classes (multi-class).

    Log-probabilities in float64 keep the ranking exact: a float32 ``softmax(100·cos)`` saturates to 0/1 and ties
    images whose scores differ (AUROC then drifts towards 0.5).
    """
    img = (F.normalize(image_emb.float(), dim=-1) if normalize else image_emb.float()).double()
    if spec.mode is ZeroShotMode.BINARY:
        if negative is None:
            raise ValueError("binary zero-shot needs negative class embeddings")
        pair = torch.stack([img @ positive.double().T, img @ negative.double().T], dim=-1) * spec.scale
        return exact_log_softmax(pair)[..., 0]
    return exact_log_softmax(img @ positive.double().T * spec.scale)


def exact_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dim that stays exact for the dominant class.

    ``l_c - logsumexp(l)`` rounds to exactly 0 once one logit leads by ~40 (float64), tying every confident image;
    ``-softplus(logsumexp_{j≠c}(l_j - l_c))`` keeps the tiny differences (softplus of a very negative number is
    computed as ``log1p(exp(.))``).
    """
    diff = logits.unsqueeze(-2) - logits.unsqueeze(-1)  # [..., c, j] = l_j - l_c
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    return -F.softplus(diff.masked_fill(eye, float("-inf")).logsumexp(dim=-1))


METRIC_NAMES = ("auroc", "auprc", "accuracy", "f1")


def _dense_ranks(score: torch.Tensor) -> torch.Tensor:
    """Order-preserving map to [0, 1] (ties stay ties): AUROC/AUPRC depend only on the order, and torchmetrics
    would otherwise squash scores outside [0, 1] with a sigmoid in float32."""
    uniq, inverse = torch.unique(score.double(), return_inverse=True)
    return inverse.float() / max(1, len(uniq) - 1)


def binary_class_metrics(score: torch.Tensor, target: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of ``score`` (any monotone score, e.g. a log-probability), accuracy and
    F1 of the boolean ``predicted`` (torchmetrics), with the class counts.

    AUROC/AUPRC are NaN when the images hold only one class; accuracy/F1 are always defined.
    """
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_average_precision,
        binary_f1_score,
    )

    y = target.long()
    n_pos = int(y.sum())
    both = 0 < n_pos < y.numel()
    ranks = _dense_ranks(score) if y.numel() else score.float()
    hard = predicted.float()
    return {"auroc": float(binary_auroc(ranks, y)) if both else math.nan,
            "auprc": float(binary_average_precision(ranks, y)) if both else math.nan,
            "accuracy": float(binary_accuracy(hard, y)), "f1": float(binary_f1_score(hard, y)),
            "positives": float(n_pos), "negatives": float(y.numel() - n_pos)}


def spec_metrics(log_probs: torch.Tensor, targets: torch.Tensor, spec: ZeroShotSpec,
                 valid: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Per-class metrics and their ``mean`` (macro over the defined values) from :func:`spec_scores` output.

    Binary: ``log_probs``/``targets``/``valid`` are ``(N, C)`` (log p(positive), 0/1, which labels are known);
    accuracy and F1 call an image positive when p ≥ 0.5 (the positive prompts are closer than the negative ones).
    Multi-class: ``targets`` is ``(N,)`` class indices; per class one-vs-rest AUROC/AUPRC of its probability,
    accuracy/F1 of "predicted c" (argmax) vs "is c"; ``mean`` also holds ``top1_accuracy``.
    """
    out: dict[str, dict[str, float]] = {}
    if spec.mode is ZeroShotMode.BINARY:
        valid = torch.ones_like(targets, dtype=torch.bool) if valid is None else valid.bool()
        for c, cls in enumerate(spec.classes):
            keep = valid[:, c]
            score = log_probs[keep, c]
            out[cls.name] = binary_class_metrics(score, targets[keep, c], score >= math.log(0.5))
    else:
        predicted = log_probs.argmax(dim=-1)
        for c, cls in enumerate(spec.classes):
            out[cls.name] = binary_class_metrics(log_probs[:, c], targets == c, predicted == c)
    mean = {}
    for m in METRIC_NAMES:
        finite = [v[m] for v in out.values() if not math.isnan(v[m])]
        mean[m] = sum(finite) / len(finite) if finite else math.nan
    if spec.mode is ZeroShotMode.MULTICLASS:
        hits = (log_probs.argmax(dim=-1) == targets).float()
        mean["top1_accuracy"] = float(hits.mean()) if len(targets) else math.nan
    out["mean"] = mean
    return out


def chexpert_targets(labels: torch.Tensor, spec: ZeroShotSpec,
                     policy: UncertainPolicy | str = UncertainPolicy.ZEROS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, valid)`` of a binary spec from ``(N, 14)`` four-state CheXpert labels; each class's ``label``
    must name an observation (NOT_MENTIONED is negative, UNCERTAIN follows ``policy``)."""
    if spec.mode is not ZeroShotMode.BINARY:
        raise ValueError(f"{spec.source}: CheXpert labels fit binary (multi-label) mode only")
    unknown = [c.label for c in spec.classes if c.label not in OBSERVATION_INDEX]
    if unknown:
        raise ValueError(f"{spec.source}: labels {unknown} are not CheXpert observations {CHEXPERT_OBSERVATIONS}")
    positive, valid = binarize(torch.as_tensor(labels), policy)
    idx = [OBSERVATION_INDEX[c.label] for c in spec.classes]
    return positive[:, idx].long(), valid[:, idx]


@torch.no_grad()
def evaluate_spec(encode: Callable[[list[str]], torch.Tensor], image_emb: torch.Tensor, targets: torch.Tensor,
                  spec: ZeroShotSpec, valid: torch.Tensor | None = None,
                  normalize: bool = True) -> dict[str, dict[str, float]]:
    """Embed and ensemble the spec's prompts with ``encode`` (e.g. ``lambda t: encode_prompts(model, t)``), score
    ``image_emb`` and return :func:`spec_metrics`."""
    positive, negative = class_embeddings(encode, spec, normalize)
    log_probs = spec_scores(image_emb.float().cpu(), positive, negative, spec, normalize)
    return spec_metrics(log_probs, targets, spec, valid)
