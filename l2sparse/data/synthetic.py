"""Built-in synthetic scenes: a room with spheres, boxes and cylinders, rendered by analytic ray casting.

Every label comes from the same ray-surface intersections, so the labels agree with each other by construction:

* ``semseg``: class of the first surface hit (``CLASSES``).
* ``depth``: metric depth along the optical axis (metres); the camera's rays are ``(x, y, 1)`` so the ray
  parameter *is* the depth.
* ``normals``: unit surface normal in the camera frame (x right, y up, z forward), facing the camera.
* ``edges``: pixels whose 4-neighbourhood touches another surface (another object, or another wall/floor plane),
  which includes every semantic boundary and every depth discontinuity.
* ``attributes``: image-level binary labels (``ATTRIBUTES``) read off the rendered labels and the light.

Hand-written because it is the project's own benchmark data: deterministic by ``(seed, split, index)``, any size,
no download. This is synthetic data, a stand-in for NYU-v2; outputs say so.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from l2sparse.data.base import CachedDataset
from l2sparse.errors import ConfigError

CLASSES = ("floor", "wall", "ceiling", "sphere", "box", "cylinder")
ATTRIBUTES = ("has_sphere", "has_box", "has_cylinder", "warm_light", "cluttered", "objects_left")
SPLITS = {"train": 0, "val": 1, "test": 2}
_FLOOR, _WALL, _CEILING, _SPHERE, _BOX, _CYLINDER = range(len(CLASSES))


@dataclass
class _Surface:
    cls: int
    t: np.ndarray  # (N,) ray parameter of the hit, inf where missed
    normal: np.ndarray | None  # (3,) for planes; None when computed per pixel
    albedo: np.ndarray  # (3,)
    kind: str = "plane"
    centre: np.ndarray | None = None
    radius: float = 0.0
    top: float = 0.0


def _rot(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _plane(d: np.ndarray, axis: int, value: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = value / d[:, axis]
    return np.where(t > 0, t, np.inf)


def _sphere(d: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    a = (d * d).sum(1)
    b = d @ c
    disc = b * b - a * (c @ c - r * r)
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _box(d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = lo / d, hi / d
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, t_far = tmin.max(1), tmax.min(1)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf), tmin.argmax(1)


def _cylinder(d: np.ndarray, c: np.ndarray, r: float, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dz * dz
    b = dx * c[0] + dz * c[2]
    disc = b * b - a * (c[0] ** 2 + c[2] ** 2 - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (b - np.sqrt(disc)) / a
        y = t_side * dy
        side = (disc >= 0) & (t_side > 0) & (y >= y0) & (y <= y1)
        t_cap = y1 / dy
    px, pz = t_cap * dx - c[0], t_cap * dz - c[2]
    cap = (t_cap > 0) & (px * px + pz * pz <= r * r)
    t_side = np.where(side, t_side, np.inf)
    t_cap = np.where(cap, t_cap, np.inf)
    return np.minimum(t_side, t_cap), t_cap < t_side


@functools.lru_cache(maxsize=8)
def _camera_rays(height: int, width: int) -> np.ndarray:
    """Camera-frame ray directions ``(H * W, 3)`` with z = 1 (focal length 0.9 W, ~58° horizontal field)."""
    f = 0.9 * width
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.stack([(u - width / 2) / f, -(v - height / 2) / f, np.ones_like(u)], -1).reshape(-1, 3)
    rays.flags.writeable = False
    return rays


def render_scene(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    """Render one random scene.

    Returns:
        ``image (H, W, 3) float32 in [0, 1]``, ``semseg (H, W) int64``, ``depth (H, W) float32``,
        ``normals (H, W, 3) float32`` (unit), ``edges (H, W) float32 in {0, 1}``, ``attributes (A,) float32``.
    """
    d_cam = _camera_rays(height, width)
    rot = _rot(rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.4))
    d = d_cam @ rot.T  # world ray directions; the camera sits at the origin

    cam_h, room_h = rng.uniform(1.2, 1.7), rng.uniform(2.5, 3.2)
    left, right, back = -rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5), rng.uniform(5.0, 8.0)
    wall_rgb = rng.uniform(0.55, 0.9, 3)
    surfaces = [
        _Surface(_FLOOR, _plane(d, 1, -cam_h), np.array([0.0, 1, 0]), rng.uniform(0.3, 0.6, 3)),
        _Surface(_CEILING, _plane(d, 1, room_h - cam_h), np.array([0.0, -1, 0]), rng.uniform(0.8, 0.95, 3)),
        _Surface(_WALL, _plane(d, 2, back), np.array([0.0, 0, -1]), wall_rgb),
        _Surface(_WALL, _plane(d, 0, left), np.array([1.0, 0, 0]), wall_rgb * 0.9),
        _Surface(_WALL, _plane(d, 0, right), np.array([-1.0, 0, 0]), wall_rgb * 0.95),
    ]
    n_obj = int(rng.integers(1, 6))
    for _ in range(n_obj):
        kind = int(rng.integers(0, 3))
        size = rng.uniform(0.3, 0.7)
        x = rng.uniform(left + size + 0.1, right - size - 0.1)
        z = rng.uniform(1.8, 0.6 * back)
        albedo = rng.uniform(0.1, 1.0, 3)
        if kind == 0:
            c = np.array([x, -cam_h + size, z])
            surfaces.append(_Surface(_SPHERE, _sphere(d, c, size), None, albedo, "sphere", c, size))
        elif kind == 1:
            half = np.array([size, rng.uniform(0.2, 0.8), size * rng.uniform(0.6, 1.4)])
            lo = np.array([x, -cam_h, z]) - half * np.array([1, 0, 1])
            hi = lo + 2 * half * np.array([1, 0.5, 1])
            t, axis = _box(d, lo, hi)
            s = _Surface(_BOX, t, None, albedo, "box", np.stack([lo, hi]))
            s.top = axis  # face axis of the entry plane, per pixel
            surfaces.append(s)
        else:
            c = np.array([x, 0.0, z])
            top = -cam_h + rng.uniform(0.4, 1.6)
            t, on_cap = _cylinder(d, c, size * 0.7, -cam_h, top)
            s = _Surface(_CYLINDER, t, None, albedo, "cylinder", c, size * 0.7)
            s.top = on_cap
            surfaces.append(s)

    ts = np.stack([s.t for s in surfaces])
    inst = ts.argmin(0)
    depth = ts[inst, np.arange(len(inst))]
    p = depth[:, None] * d
    normals = np.zeros_like(p)
    albedo = np.zeros_like(p)
    semseg = np.zeros(len(inst), dtype=np.int64)
    for i, s in enumerate(surfaces):
        m = inst == i
        if not m.any():
            continue
        semseg[m] = s.cls
        albedo[m] = s.albedo
        if s.kind == "plane":
            normals[m] = s.normal
        elif s.kind == "sphere":
            normals[m] = (p[m] - s.centre) / s.radius
        elif s.kind == "box":
            ax = s.top[m]
            lo, hi = s.centre
            n = np.zeros((m.sum(), 3))
            rows = np.arange(len(ax))
            centre = (lo + hi) / 2
            n[rows, ax] = np.sign(p[m][rows, ax] - centre[ax])
            normals[m] = n
        else:
            side = (p[m] - s.centre) * np.array([1, 0, 1]) / s.radius
            normals[m] = np.where(s.top[m][:, None], np.array([0.0, 1, 0]), side)
    if surfaces[0].t.size and (inst == 0).any():
        floor = inst == 0
        checker = ((np.floor(p[floor, 0] * 2) + np.floor(p[floor, 2] * 2)) % 2) * 0.25 + 0.75
        albedo[floor] *= checker[:, None]

    warm = bool(rng.random() < 0.5)
    light_rgb = np.array([1.0, 0.85, 0.65]) if warm else np.array([0.7, 0.85, 1.0])
    light = np.array([rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.8, -0.2)])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip(normals @ light, 0, None)
    image = albedo * shade[:, None] * light_rgb + rng.normal(0, 0.01, albedo.shape)

    h, w = height, width
    inst2 = inst.reshape(h, w)
    edge = np.zeros((h, w), dtype=bool)
    dv = inst2[1:] != inst2[:-1]
    dh = inst2[:, 1:] != inst2[:, :-1]
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh

    sem2 = semseg.reshape(h, w)
    min_px = max(1, int(0.002 * h * w))
    objects = sem2 >= _SPHERE
    visible = [i for i in range(5, len(surfaces)) if (inst == i).sum() >= min_px]
    attributes = np.array(
        [
            (sem2 == _SPHERE).sum() >= min_px,
            (sem2 == _BOX).sum() >= min_px,
            (sem2 == _CYLINDER).sum() >= min_px,
            warm,
            len(visible) >= 3,
            objects[:, : w // 2].sum() > objects[:, w - w // 2 :].sum(),
        ],
        dtype=np.float32,
    )
    return {
        "image": np.clip(image, 0, 1).reshape(h, w, 3).astype(np.float32),
        "semseg": sem2,
        "depth": depth.reshape(h, w).astype(np.float32),
        "normals": (normals @ rot).reshape(h, w, 3).astype(np.float32),
        "edges": edge.astype(np.float32),
        "attributes": attributes,
    }


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(hw) != 2 or min(hw) < 8:
        raise ConfigError(f"image_size: expected an int or (H, W) with both ≥ 8, got {image_size!r}")
    return int(hw[0]), int(hw[1])


class SyntheticScenes(CachedDataset):
    """Deterministic synthetic scenes; item ``i`` of a split depends only on ``(seed, split, i, image_size)``.

    Items are dicts of tensors: ``image (3, H, W)``, ``semseg (H, W)`` int64, ``depth (1, H, W)``,
    ``normals (3, H, W)``, ``edges (1, H, W)``, ``attributes (A,)``. Rendered items are cached in memory.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        size: number of images.
        image_size: ``H`` (square) or ``(H, W)``.
        seed: base seed.
    """

    classes = CLASSES
    attributes = ATTRIBUTES

    def __init__(self, split: str = "train", size: int = 1000, image_size: int | Sequence[int] = 64, seed: int = 0):
        super().__init__()
        if split not in SPLITS:
            raise ConfigError(f"split: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if size < 1:
            raise ConfigError(f"size: expected ≥ 1 images, got {size}")
        self.split, self.size, self.seed = split, size, seed
        self.height, self.width = _size(image_size)

    def __len__(self) -> int:
        return self.size

    def load_item(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
        s = render_scene(rng, self.height, self.width)
        return {
            "image": torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous(),
            "semseg": torch.from_numpy(s["semseg"]),
            "depth": torch.from_numpy(s["depth"])[None],
            "normals": torch.from_numpy(s["normals"]).permute(2, 0, 1).contiguous(),
            "edges": torch.from_numpy(s["edges"])[None],
            "attributes": torch.from_numpy(s["attributes"]),
        }
