"""Transform presets: shapes, determinism, and that laterality survives unless a flip is asked for."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cxr.data.transforms import AugmentStrength, EvalResize, TransformConfig, build_transform

SIZE = 64


def blob_image(height: int = 300, width: int = 240, left: bool = True) -> np.ndarray:
    """Dark film with a bright disc at the image-left (or right), like a marker or the heart shadow."""
    img = np.full((height, width), 0.15, dtype=np.float32)
    yy, xx = np.mgrid[:height, :width]
    cx = width * 0.2 if left else width * 0.8
    img[(yy - height / 2) ** 2 + (xx - cx) ** 2 < (width * 0.1) ** 2] = 1.0
    return img


def left_minus_right(t: torch.Tensor) -> float:
    """Horizontal offset of the bright blob from the image centre, in pixels (> 0: image-left).

    The blob is the set of pixels above the midpoint between the median (background) and the
    maximum, so brightness/contrast/gamma/noise draws do not move the measurement.
    """
    x = t[0]
    threshold = (x.median() + x.max()) / 2
    cols = torch.nonzero(x > threshold)[:, 1].float()
    return float((x.shape[-1] - 1) / 2 - cols.mean())


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_shape_dtype(train, in_chans):
    tf = build_transform(train, SIZE, in_chans=in_chans)
    out = tf(np.random.default_rng(0).random((200, 150), dtype=np.float32))
    assert out.shape == (in_chans, SIZE, SIZE) and out.dtype == torch.float32
    if in_chans == 3:
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_eval_is_deterministic_and_normalised():
    img = np.random.default_rng(1).random((300, 200), dtype=np.float32)
    a, b = build_transform(False, SIZE)(img), build_transform(False, SIZE)(img)
    assert torch.equal(a, b)
    tf = build_transform(False, SIZE)
    assert torch.equal(tf(img), tf(img))
    # Letterbox: a 300×200 film padded left/right with air (0 → (0 - 0.5) / 0.25 = -2).
    assert torch.allclose(a[..., :, 0], torch.full((SIZE,), -2.0))
    assert float(a[..., :, SIZE // 2].mean()) > -2.0 + 1.0


def test_eval_crop_mode_has_no_padding():
    img = np.full((300, 200), 0.5, dtype=np.float32)
    img[0, 0] = 0.0  # not constant, otherwise irrelevant
    out = build_transform(False, SIZE, eval_resize=EvalResize.CROP)(img)
    assert out.shape == (1, SIZE, SIZE)
    assert float(out.min()) > -1.0  # no -2 pad columns


def test_train_is_random_but_bounded():
    img = blob_image()
    tf = build_transform(True, SIZE, strength=AugmentStrength.STRONG)
    outs = [tf(img) for _ in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    for o in outs:
        assert torch.isfinite(o).all() and -2.0 - 1e-5 <= float(o.min()) and float(o.max()) <= 2.0 + 1e-5


@pytest.mark.parametrize("strength", list(AugmentStrength))
def test_laterality_survives_default_train_pipeline(strength):
    img = blob_image(left=True)
    tf = build_transform(True, SIZE, strength=strength)
    diffs = [left_minus_right(tf(img)) for _ in range(200)]
    assert min(diffs) > SIZE * 0.08, f"blob moved towards the right in a draw (min offset {min(diffs):.1f} px)"
    mirrored = [left_minus_right(tf(blob_image(left=False))) for _ in range(50)]
    assert max(mirrored) < -SIZE * 0.08  # the test can fail: a right-side blob reads as right


def test_laterality_survives_eval_pipelines():
    for mode in EvalResize:
        tf = build_transform(False, SIZE, eval_resize=mode, in_chans=3)
        assert left_minus_right(tf(blob_image(left=True))) > SIZE * 0.15
        assert left_minus_right(tf(blob_image(left=False))) < -SIZE * 0.15


def test_default_config_never_flips_and_hflip_only_when_asked():
    config = TransformConfig(image_size=SIZE)
    assert config.hflip_prob == 0.0
    assert "HorizontalFlip" not in repr(config.build(train=True).pipeline)
    always = build_transform(True, SIZE, hflip_prob=1.0)
    assert all(left_minus_right(always(blob_image(left=True))) < -SIZE * 0.15 for _ in range(30))
    sometimes = build_transform(True, SIZE, hflip_prob=0.5)
    sides = {left_minus_right(sometimes(blob_image(left=True))) > 0 for _ in range(60)}
    assert sides == {True, False}


def test_config_builds_and_pickles_for_dataloader_workers():
    config = TransformConfig(image_size=SIZE, in_chans=3, mean=(0.5, 0.5, 0.5), std=0.25)
    tf = pickle.loads(pickle.dumps(config.build(train=True)))
    assert tf(blob_image()).shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("kwargs", [dict(in_chans=2), dict(image_size=4), dict(hflip_prob=1.5),
                                    dict(mean=(0.1, 0.2), in_chans=3), dict(std=0.0)])
def test_bad_arguments_raise(kwargs):
    args = dict(train=False, image_size=SIZE) | kwargs
    with pytest.raises(ValueError):
        build_transform(**args)


def test_rejects_non_2d_input():
    with pytest.raises(ValueError, match="2-D grayscale"):
        build_transform(False, SIZE)(np.zeros((10, 10, 3), dtype=np.float32))
