"""Albumentations presets: float ``(H, W)`` in ``[0, 1]`` → normalised tensor ``(C, S, S)``.

Geometry always resizes first (to the target size), so every later op runs on ``S × S`` pixels
instead of a 2–3k² radiograph. No horizontal flip unless asked: left/right is anatomy (heart on the
image-right of a PA film, "left lower lobe" in the report), and flipping silently breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

_PAD_VALUE = 0.0  # air/background is dark in display-ready images


class AugmentStrength(str, Enum):
    """How hard the train-time augmentation pushes (geometry and intensity together)."""

    LIGHT = "light"
    MEDIUM = "medium"
    STRONG = "strong"


class EvalResize(str, Enum):
    """Deterministic eval geometry: ``PAD`` keeps the whole film (longest side + pad to square);
    ``CROP`` resizes the shortest side and centre-crops (loses the film's long-side edges)."""

    PAD = "pad"
    CROP = "crop"


@dataclass(frozen=True)
class _AugmentParams:
    crop_scale: tuple[float, float]
    rotate: float
    translate: float
    zoom: tuple[float, float]
    affine_p: float
    brightness: float
    contrast: float
    gamma: tuple[float, float]
    noise_std: tuple[float, float]
    noise_p: float


_PRESETS: dict[AugmentStrength, _AugmentParams] = {
    AugmentStrength.LIGHT: _AugmentParams((0.9, 1.0), 5.0, 0.02, (0.95, 1.05), 0.5, 0.05, 0.05, (90, 110),
                                          (0.005, 0.01), 0.2),
    AugmentStrength.MEDIUM: _AugmentParams((0.8, 1.0), 10.0, 0.05, (0.9, 1.1), 0.7, 0.1, 0.1, (80, 120),
                                           (0.01, 0.03), 0.3),
    AugmentStrength.STRONG: _AugmentParams((0.7, 1.0), 15.0, 0.08, (0.85, 1.15), 0.8, 0.2, 0.2, (70, 130),
                                           (0.01, 0.05), 0.5),
}


@dataclass(frozen=True)
class TransformConfig:
    """Typed image-transform settings (a LightningCLI-configurable group).

    ``hflip_prob`` > 0 enables random horizontal flips. **Warning:** a flipped chest film shows
    situs inversus and contradicts laterality words in the paired report; only use it when the
    text is laterality-free or flipped consistently.
    """

    image_size: int = 224
    in_chans: int = 1
    mean: float | tuple[float, ...] = 0.5
    std: float | tuple[float, ...] = 0.25
    hflip_prob: float = 0.0
    strength: AugmentStrength = AugmentStrength.MEDIUM
    eval_resize: EvalResize = EvalResize.PAD

    def build(self, train: bool) -> ImageTransform:
        """The train (random) or eval (deterministic) transform for these settings."""
        return build_transform(train, self.image_size, in_chans=self.in_chans, mean=self.mean, std=self.std,
                               hflip_prob=self.hflip_prob, strength=self.strength, eval_resize=self.eval_resize)


class ImageTransform:
    """Callable ``(H, W)`` float32 in ``[0, 1]`` → ``torch.Tensor`` ``(in_chans, S, S)``; picklable."""

    def __init__(self, pipeline, image_size: int, in_chans: int, train: bool) -> None:
        self.pipeline = pipeline
        self.image_size = image_size
        self.in_chans = in_chans
        self.train = train

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        """Transform one image; ``seed`` fixes the random augmentation (albumentations otherwise draws
        from OS entropy, and runs would not repeat)."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
        if image.dtype != np.float32:
            image = image.astype(np.float32)
        if seed is not None and self.train:
            self.pipeline.set_random_seed(seed)
        return self.pipeline(image=image)["image"]

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return f"ImageTransform({kind}, size={self.image_size}, in_chans={self.in_chans})"


def build_transform(
    train: bool,
    image_size: int,
    in_chans: int = 1,
    mean: float | tuple[float, ...] = 0.5,
    std: float | tuple[float, ...] = 0.25,
    hflip_prob: float = 0.0,
    strength: AugmentStrength = AugmentStrength.MEDIUM,
    eval_resize: EvalResize = EvalResize.PAD,
) -> ImageTransform:
    """Build the train or eval transform.

    Train: resize longest side → pad to square → RandomResizedCrop (ratio ≈ 1) → mild Affine
    (rotate/translate/zoom) → brightness/contrast/gamma → mild Gaussian noise → [hflip only if
    ``hflip_prob`` > 0; see :class:`TransformConfig`] → channels → normalise. Eval: resize + pad
    (or resize shortest side + centre crop), channels, normalise — fully deterministic.
    ``in_chans`` 3 replicates the gray channel; ``mean``/``std`` are in ``[0, 1]`` pixel units.
    """
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    if not 0.0 <= hflip_prob <= 1.0:
        raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
    mean_t, std_t = _per_channel(mean, in_chans, "mean"), _per_channel(std, in_chans, "std")
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be positive, got {std}")
    size = (image_size, image_size)
    # INTER_AREA when shrinking avoids aliasing of fine lung texture; the pad keeps the aspect ratio.
    letterbox = [
        A.LongestMaxSize(max_size=image_size, area_for_downscale="image"),
        A.PadIfNeeded(image_size, image_size, border_mode=cv2.BORDER_CONSTANT, fill=_PAD_VALUE),
    ]
    if train:
        p = _PRESETS[AugmentStrength(strength)]
        ops = [
            *letterbox,
            A.RandomResizedCrop(size=size, scale=p.crop_scale, ratio=(0.9, 1.1)),
            A.Affine(rotate=(-p.rotate, p.rotate), translate_percent=(-p.translate, p.translate), scale=p.zoom,
                     border_mode=cv2.BORDER_CONSTANT, fill=_PAD_VALUE, p=p.affine_p),
            A.RandomBrightnessContrast(brightness_limit=p.brightness, contrast_limit=p.contrast, p=0.5),
            A.RandomGamma(gamma_limit=p.gamma, p=0.5),
            A.GaussNoise(std_range=p.noise_std, p=p.noise_p),
        ]
        if hflip_prob > 0:
            ops.append(A.HorizontalFlip(p=hflip_prob))
    elif EvalResize(eval_resize) is EvalResize.PAD:
        ops = list(letterbox)
    else:
        ops = [A.SmallestMaxSize(max_size=image_size, area_for_downscale="image"),
               A.CenterCrop(image_size, image_size)]
    if in_chans == 3:
        ops.append(A.ToRGB(num_output_channels=3))
    ops += [A.Normalize(mean=mean_t, std=std_t, max_pixel_value=1.0), ToTensorV2()]
    return ImageTransform(A.Compose(ops), image_size=image_size, in_chans=in_chans, train=train)


def _per_channel(value: float | tuple[float, ...], in_chans: int, name: str) -> tuple[float, ...]:
    values = (float(value),) * in_chans if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) == 1:
        values = values * in_chans
    if len(values) != in_chans:
        raise ValueError(f"{name} has {len(values)} values for in_chans={in_chans}")
    return values
