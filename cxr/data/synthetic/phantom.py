"""Grayscale chest X-ray phantoms in which every present finding visibly changes the picture.

Vectorised numpy on a normalised grid (x, y in [-1, 1], y down) plus cv2 for tubes/wires and blur. Anatomy:
body outline, lungs with vessel markings, heart, mediastinum, diaphragm domes, ribs, clavicles, spine; lateral
views have an anterior heart, a posterior spine and a sternum. Patient-to-patient variation comes from
:class:`PatientAnatomy`, image-to-image variation (exposure, noise) from the seed.

Radiological convention: on PA/AP images the patient's RIGHT is on the IMAGE LEFT, so a right effusion fills
the image-left lung base and the heart bulges to the image right.

Returns float32 images in [0, 1] (bright = dense); writers quantise them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from cxr.data.synthetic.findings import Device, Finding, Laterality, PlacedDevice, Severity, Zone
from cxr.labels import LabelState
from cxr.records import ViewPosition


@dataclass(frozen=True)
class PhantomSpec:
    """Everything the renderer needs for one image (findings are the study's mentions; only present ones draw)."""

    view: ViewPosition
    anatomy_scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    lung_height: float = 1.0
    heart_width: float = 0.43
    exposure: float = 0.0
    findings: tuple[Finding, ...] = ()
    devices: tuple[PlacedDevice, ...] = ()
    seed: int = 0  # image noise / exposure jitter
    finding_seed: int = 0  # placement of patches, shared by all views of a study
    noise: bool = True


def spec_for_study(study, view_index: int) -> PhantomSpec:
    """The :class:`PhantomSpec` of image ``view_index`` of a :class:`~cxr.data.synthetic.world.SyntheticStudy`."""
    a = study.anatomy
    return PhantomSpec(
        view=study.views[view_index].view, anatomy_scale=a.body_scale, shift_x=a.shift_x, shift_y=a.shift_y,
        lung_height=a.lung_height, heart_width=a.heart_width, exposure=a.exposure,
        findings=tuple(study.findings.values()), devices=study.devices,
        seed=study.render_seed + 7919 * (view_index + 1), finding_seed=study.render_seed)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return coords[None, :].repeat(size, 0), coords[:, None].repeat(size, 1)


def _soft_ellipse(x, y, cx, cy, ax, ay, edge: float = 0.04) -> np.ndarray:
    """~1 inside the ellipse, ~0 outside, with a soft edge of relative width ``edge``."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)


def _mix(img: np.ndarray, value: float | np.ndarray, weight: np.ndarray) -> np.ndarray:
    return img + (value - img) * weight


def _gauss(x, y, cx, cy, sx, sy) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _image_x(side: Laterality) -> float:
    """Sign of image x for a patient side: patient RIGHT -> image LEFT (negative x)."""
    return -1.0 if side is Laterality.RIGHT else 1.0


def _amp(f: Finding) -> float:
    scale = (f.severity or Severity.MODERATE).scale
    return scale * (0.6 if f.state is LabelState.UNCERTAIN else 1.0)


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


def _to_px(size: int, pts: list[tuple[float, float]]) -> np.ndarray:
    arr = (np.asarray(pts, dtype=np.float32) + 1.0) * 0.5 * size
    return np.round(arr).astype(np.int32).reshape(-1, 1, 2)


@dataclass
class _Lung:
    sign: float  # image-x sign of this lung
    cx: float
    cy: float
    ax: float
    ay: float
    mask: np.ndarray


def _zone_y(lung: _Lung, zone: Zone | None) -> float:
    return lung.cy + {Zone.LOWER: 0.45, Zone.MID: 0.05, Zone.UPPER: -0.45}[zone or Zone.LOWER] * lung.ay


def render_phantom(spec: PhantomSpec, size: int = 256) -> np.ndarray:
    """Render one image (float32, shape (size, size), values in [0, 1])."""
    if size < 16:
        raise ValueError(f"image size must be >= 16, got {size}")
    if spec.view.is_lateral:
        img = _render_lateral(spec, size)
    else:
        img = _render_frontal(spec, size)
    rng = np.random.default_rng(spec.seed)
    gain = 1.0 + spec.exposure + float(rng.uniform(-0.03, 0.03))
    img = img * gain + spec.exposure * 0.5
    sigma = max(0.5, size / 400.0)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    if spec.noise:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.006, 0.015))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _present(spec: PhantomSpec) -> dict[str, Finding]:
    return {f.observation: f for f in spec.findings if f.present}


def _render_frontal(spec: PhantomSpec, size: int) -> np.ndarray:
    x, y = _grid(size)
    s, sx, sy = spec.anatomy_scale, spec.shift_x, spec.shift_y
    frng = np.random.default_rng(spec.finding_seed)
    present = _present(spec)
    ap = spec.view is ViewPosition.AP

    img = np.full((size, size), 0.04, dtype=np.float32)
    body = _soft_ellipse(x, y, sx, 0.12 + sy, 0.9 * s, 1.1 * s, 0.05)
    img = _mix(img, 0.55, body)

    # Lungs: ellipses cut by the diaphragm domes (the costophrenic angle is the lateral-lower corner).
    markings = _texture(frng, size, 24) * 0.03 + _texture(frng, size, 8) * 0.02
    lungs: list[_Lung] = []
    lung_union = np.zeros_like(img)
    for sign in (-1.0, 1.0):
        cx, cy = sx + sign * 0.36 * s, sy - 0.1 * s
        ax, ay = 0.3 * s, 0.56 * s * spec.lung_height
        u = np.clip(sign * (x - cx) / ax, -1.0, 1.0)  # +1 = lateral
        dome = cy + ay * (0.62 + 0.3 * u * u + 0.08 * u)
        below_dome = np.clip((dome - y) / 0.02 + 0.5, 0.0, 1.0)
        mask = _soft_ellipse(x, y, cx, cy, ax, ay, 0.05) * below_dome
        lungs.append(_Lung(sign, cx, cy, ax, ay, mask))
        lung_union = np.maximum(lung_union, mask)
    hilum = sum(_gauss(x, y, lung.cx - lung.sign * 0.15 * s, lung.cy + 0.05, 0.2 * s, 0.3 * s) for lung in lungs)
    img = _mix(img, 0.2 + markings + 0.06 * hilum, lung_union)

    # Findings inside the lungs (before bones so ribs stay visible over them).
    by_side = {-1.0: lungs[0], 1.0: lungs[1]}

    def side_lungs(f: Finding) -> list[_Lung]:
        return [by_side[_image_x(side)] for side in (f.laterality or Laterality.RIGHT).sides]

    if "Edema" in present:
        f = present["Edema"]
        haze = sum(_gauss(x, y, lung.cx - lung.sign * 0.1 * s, lung.cy + 0.1, 0.16 * s, 0.28 * s) for lung in lungs)
        img = _mix(img, 0.6, np.clip(haze, 0, 1) * lung_union * (0.35 + 0.4 * _amp(f)))
    for name in ("Lung Opacity", "Consolidation", "Pneumonia"):
        if name not in present:
            continue
        f = present[name]
        for lung in side_lungs(f):
            zy = _zone_y(lung, f.zone)
            patch = np.zeros_like(img)
            for _ in range(3):
                px = lung.cx + lung.sign * float(frng.uniform(-0.25, 0.35)) * lung.ax
                py = zy + float(frng.uniform(-0.12, 0.12)) * lung.ay
                r = (0.07 + 0.09 * _amp(f)) * s
                patch = np.maximum(patch, _gauss(x, y, px, py, r, r * 1.2))
            img = _mix(img, 0.62, np.clip(patch * 1.4, 0, 1) * lung.mask * (0.5 + 0.4 * _amp(f)))
    if "Atelectasis" in present:
        f = present["Atelectasis"]
        for lung in side_lungs(f):
            ly = lung.cy + 0.5 * lung.ay
            dist = np.abs(y - (ly + 0.15 * (x - lung.cx)))
            band = np.clip(1.0 - dist / (0.012 + 0.012 * _amp(f)), 0, 1) * (np.abs(x - lung.cx) < 0.65 * lung.ax)
            img = _mix(img, 0.65, band * lung.mask * 0.9)
    if "Lung Lesion" in present:
        f = present["Lung Lesion"]
        for lung in side_lungs(f):
            px = lung.cx + lung.sign * float(frng.uniform(-0.2, 0.3)) * lung.ax
            nod = _soft_ellipse(x, y, px, _zone_y(lung, f.zone), (0.035 + 0.04 * _amp(f)) * s,
                                (0.035 + 0.04 * _amp(f)) * s, 0.15)
            img = _mix(img, 0.72, nod)
    if "Pleural Effusion" in present:
        f = present["Pleural Effusion"]
        for lung in side_lungs(f):
            # Meniscus: the fluid level climbs laterally; the whole costophrenic angle is filled.
            lateral = np.clip(lung.sign * (x - lung.cx) / lung.ax, -1, 1) * 0.5 + 0.5
            level = lung.cy + lung.ay * (1.0 - (0.3 + 0.75 * _amp(f)) * (0.75 + 0.6 * lateral))
            fluid = np.clip((y - level) / 0.03, 0, 1)
            region = _soft_ellipse(x, y, lung.cx, lung.cy, lung.ax * 1.04, lung.ay * 1.04, 0.05)
            img = _mix(img, 0.6, fluid * region)
    if "Pleural Other" in present:
        f = present["Pleural Other"]
        for lung in side_lungs(f):
            r = np.sqrt(((x - lung.cx) / lung.ax) ** 2 + ((y - lung.cy) / lung.ay) ** 2)
            rim = np.clip(1.0 - np.abs(r - 0.95) / 0.06, 0, 1) * (lung.sign * (x - lung.cx) > 0.3 * lung.ax)
            img = _mix(img, 0.6, rim * 0.8)
    if "Pneumothorax" in present:
        f = present["Pneumothorax"]
        for lung in side_lungs(f):
            r = np.sqrt(((x - lung.cx) / lung.ax) ** 2 + ((y - lung.cy) / lung.ay) ** 2)
            width = 0.12 + 0.3 * _amp(f)
            upper_lateral = np.clip((lung.cy + 0.25 * lung.ay - y) / 0.05, 0, 1) * np.clip(
                (lung.sign * (x - lung.cx) + 0.5 * lung.ax) / 0.05, 0, 1)
            air = np.clip((r - (1.0 - width)) / 0.02, 0, 1) * (r < 1.03) * upper_lateral
            img = _mix(img, 0.07, air)  # dark, no lung markings
            line = np.clip(1.0 - np.abs(r - (1.0 - width)) / 0.015, 0, 1) * upper_lateral
            img = _mix(img, 0.45, line * 0.8)  # visceral pleural line

    # Heart and mediastinum (AP projection magnifies the heart).
    cardio = present.get("Cardiomegaly")
    hw = spec.heart_width * (1.1 if ap else 1.0) * (1.0 + (0.45 * _amp(cardio) if cardio else 0.0))
    heart = _soft_ellipse(x, y, sx + 0.13 * s, sy + 0.3 * s, hw * 0.64 * s, 0.27 * s, 0.05)
    ecm = present.get("Enlarged Cardiomediastinum")
    mw = 0.11 * s * (1.0 + (0.9 * _amp(ecm) if ecm else 0.0))
    med = np.clip((mw - np.abs(x - sx)) / 0.02, 0, 1) * np.clip((0.35 * s + sy - y) / 0.05, 0, 1) * body
    img = _mix(img, 0.72, np.maximum(heart, med))

    # Bones: spine, ribs, clavicles.
    spine = np.clip((0.055 * s - np.abs(x - sx)) / 0.015, 0, 1) * body
    img = img + spine * (0.08 + 0.04 * (np.cos((y - sy) * 40.0 / s) > 0.3))
    lateral_dist = np.abs(x - sx)
    rib_phase = (y - sy + 0.45 * lateral_dist ** 2 * (1.0 / s)) / (0.14 * s)
    ribs = np.clip((np.cos(2 * np.pi * rib_phase) - 0.55) * 3.0, 0, 1) * (lateral_dist > 0.06 * s)
    img = img + ribs * 0.1 * np.maximum(lung_union, body * 0.4)
    clav_y = sy - 0.72 * s + (0.02 if ap else 0.0) - 0.12 * (lateral_dist - 0.1 * s)
    clav = np.clip(1.0 - np.abs(y - clav_y) / (0.025 * s), 0, 1) * (lateral_dist > 0.05 * s) * (
        lateral_dist < 0.55 * s)
    img = img + clav * 0.15

    if "Fracture" in present:
        f = present["Fracture"]
        for lung in side_lungs(f):
            fx, fy = lung.cx + lung.sign * 0.8 * lung.ax, lung.cy - 0.15 * lung.ay
            callus = _gauss(x, y, fx, fy, (0.03 + 0.02 * _amp(f)) * s, 0.02 * s)
            gap = np.clip(1.0 - np.abs((x - fx) * 0.8 + (y - fy)) / 0.01, 0, 1) * _gauss(x, y, fx, fy, 0.05, 0.06)
            img = img + 0.3 * callus - 0.2 * gap

    img = _draw_devices_frontal(img, spec, lungs, size)
    return img


def _draw_devices_frontal(img: np.ndarray, spec: PhantomSpec, lungs: list[_Lung], size: int) -> np.ndarray:
    if not spec.devices:
        return img
    s, sx, sy = spec.anatomy_scale, spec.shift_x, spec.shift_y
    layer = np.zeros_like(img)
    thick = max(1, round(size / 160))
    carina = sy - 0.2 * s
    for d in spec.devices:
        if d.device is Device.ETT:
            cv2.polylines(layer, [_to_px(size, [(sx, -1.0), (sx, carina - 0.12 * s)])], False, 1.0, thick + 1)
        elif d.device is Device.NG_TUBE:
            dome = sy + 0.45 * s
            pts = [(sx + 0.02, -1.0), (sx + 0.02, dome), (sx + 0.15 * s, dome + 0.15 * s), (sx + 0.3 * s, dome + 0.2 * s)]
            cv2.polylines(layer, [_to_px(size, pts)], False, 1.0, thick)
        elif d.device is Device.CENTRAL_LINE:
            sg = _image_x(d.side or Laterality.RIGHT)
            pts = [(sx + sg * 0.6 * s, sy - 0.7 * s), (sx + sg * 0.25 * s, sy - 0.62 * s),
                   (sx + sg * 0.06 * s, sy - 0.45 * s), (sx + sg * 0.05 * s, sy - 0.15 * s)]
            cv2.polylines(layer, [_to_px(size, pts)], False, 1.0, thick)
        elif d.device is Device.PACEMAKER:
            # Generator in the patient's left upper chest (image right), leads to the right heart.
            box = [(sx + 0.38 * s, sy - 0.78 * s), (sx + 0.56 * s, sy - 0.66 * s)]
            p0, p1 = _to_px(size, box).reshape(2, 2)
            cv2.rectangle(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0, -1)
            pts = [(sx + 0.42 * s, sy - 0.66 * s), (sx + 0.1 * s, sy - 0.4 * s), (sx - 0.02 * s, sy + 0.25 * s)]
            cv2.polylines(layer, [_to_px(size, pts)], False, 1.0, thick)
        elif d.device is Device.CHEST_TUBE:
            sg = _image_x(d.side or Laterality.RIGHT)
            lung = lungs[0] if sg < 0 else lungs[1]
            pts = [(lung.cx + sg * 1.05 * lung.ax, lung.cy + 0.6 * lung.ay),
                   (lung.cx + sg * 0.7 * lung.ax, lung.cy), (lung.cx + sg * 0.2 * lung.ax, lung.cy - 0.75 * lung.ay)]
            cv2.polylines(layer, [_to_px(size, pts)], False, 1.0, thick + 1)
    return np.maximum(img, layer * 0.95)


def _render_lateral(spec: PhantomSpec, size: int) -> np.ndarray:
    """Lateral view: patient facing image left (anterior = image left), spine posterior on the image right."""
    x, y = _grid(size)
    s, sx, sy = spec.anatomy_scale, spec.shift_x, spec.shift_y
    frng = np.random.default_rng(spec.finding_seed + 1)
    present = _present(spec)
    img = np.full((size, size), 0.04, dtype=np.float32)
    body = _soft_ellipse(x, y, sx, 0.1 + sy, 0.78 * s, 1.1 * s, 0.05)
    img = _mix(img, 0.58, body)
    lcx, lcy, lax, lay = sx + 0.02 * s, sy - 0.08 * s, 0.55 * s, 0.58 * s * spec.lung_height
    dome = lcy + lay * (0.55 + 0.25 * ((x - lcx) / lax) ** 2)
    lung = _soft_ellipse(x, y, lcx, lcy, lax, lay, 0.05) * np.clip((dome - y) / 0.02 + 0.5, 0, 1)
    markings = _texture(frng, size, 20) * 0.03
    img = _mix(img, 0.26 + markings, lung)
    for name in ("Lung Opacity", "Consolidation", "Pneumonia", "Lung Lesion"):
        if name in present:
            f = present[name]
            zy = lcy + {Zone.LOWER: 0.4, Zone.MID: 0.0, Zone.UPPER: -0.4}[f.zone or Zone.LOWER] * lay
            r = (0.08 + 0.08 * _amp(f)) * s if name != "Lung Lesion" else (0.04 + 0.03 * _amp(f)) * s
            img = _mix(img, 0.62, _gauss(x, y, lcx + 0.1 * s, zy, r, r) * lung * 0.8)
    if "Edema" in present:
        img = _mix(img, 0.6, _gauss(x, y, lcx, lcy + 0.1, 0.3 * s, 0.3 * s) * lung * 0.5 * _amp(present["Edema"]))
    if "Pleural Effusion" in present:
        f = present["Pleural Effusion"]
        # Fluid gathers in the posterior costophrenic sulcus (image right, bottom).
        post = np.clip((x - lcx) / lax, 0, 1)
        level = lcy + lay * (0.95 - (0.25 + 0.5 * _amp(f)) * (0.4 + 0.8 * post))
        region = _soft_ellipse(x, y, lcx, lcy, lax * 1.04, lay * 1.04, 0.05)
        img = _mix(img, 0.6, np.clip((y - level) / 0.03, 0, 1) * region)
    cardio = present.get("Cardiomegaly")
    hr = 0.26 * s * (1.0 + (0.35 * _amp(cardio) if cardio else 0.0))
    heart = _soft_ellipse(x, y, sx - 0.2 * s, sy + 0.28 * s, hr, 0.28 * s, 0.06)
    img = _mix(img, 0.68, heart)
    spine_x = sx + 0.55 * s
    spine = np.clip((0.09 * s - np.abs(x - spine_x)) / 0.02, 0, 1) * body
    img = img + spine * (0.14 + 0.06 * (np.cos((y - sy) * 35.0 / s) > 0.2))
    sternum = np.clip((0.025 * s - np.abs(x - (sx - 0.66 * s))) / 0.01, 0, 1) * (y < sy + 0.2 * s) * body
    img = img + sternum * 0.12
    if spec.devices:
        layer = np.zeros_like(img)
        thick = max(1, round(size / 160))
        for d in spec.devices:
            if d.device is Device.ETT:
                cv2.polylines(layer, [_to_px(size, [(sx - 0.1 * s, -1.0), (sx - 0.05 * s, sy - 0.3 * s)])],
                              False, 1.0, thick + 1)
            elif d.device is Device.PACEMAKER:
                p0, p1 = _to_px(size, [(sx - 0.62 * s, sy - 0.72 * s), (sx - 0.48 * s, sy - 0.62 * s)]).reshape(2, 2)
                cv2.rectangle(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0, -1)
            else:
                cv2.polylines(layer, [_to_px(size, [(sx, -1.0), (sx + 0.05 * s, sy + 0.2 * s)])], False, 1.0, thick)
        img = np.maximum(img, layer * 0.95)
    return img
