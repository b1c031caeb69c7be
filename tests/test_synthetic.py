"""The built-in synthetic scenes: reproducible, any size, and labels that agree with each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2sparse.data.synthetic import ATTRIBUTES, CLASSES, SyntheticScenes, _camera_rays
from l2sparse.errors import ConfigError


@pytest.fixture(scope="module")
def scenes():
    return SyntheticScenes("train", size=24, image_size=64, seed=3).tensors()


def test_same_seed_same_images_other_seed_or_split_other_images(scenes):
    again = SyntheticScenes("train", size=24, image_size=64, seed=3).tensors()
    for k in scenes:
        assert torch.equal(scenes[k], again[k])
    other_seed = SyntheticScenes("train", size=4, image_size=64, seed=4)[0]["image"]
    other_split = SyntheticScenes("test", size=4, image_size=64, seed=3)[0]["image"]
    assert not torch.equal(scenes["image"][0], other_seed)
    assert not torch.equal(scenes["image"][0], other_split)


def test_shapes_dtypes_and_ranges_at_any_size():
    item = SyntheticScenes("val", size=2, image_size=(40, 56))[1]
    assert item["image"].shape == (3, 40, 56) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    assert item["semseg"].shape == (40, 56) and item["semseg"].dtype == torch.int64
    assert item["semseg"].min() >= 0 and item["semseg"].max() < len(CLASSES)
    assert item["depth"].shape == (1, 40, 56) and (item["depth"] > 0).all()
    assert item["normals"].shape == (3, 40, 56)
    assert set(item["edges"].unique().tolist()) <= {0.0, 1.0}
    assert item["attributes"].shape == (len(ATTRIBUTES),)


def test_normals_are_unit_and_face_the_camera(scenes):
    n = scenes["normals"]
    torch.testing.assert_close(n.norm(dim=1), torch.ones_like(n[:, 0]))
    rays = torch.tensor(_camera_rays(64, 64), dtype=torch.float32).T.reshape(1, 3, 64, 64)
    assert ((n * rays).sum(1) < 0).float().mean() > 0.999


def test_normals_agree_with_the_depth_geometry(scenes):
    """Back-project depth to 3D points, take the cross product of neighbouring differences, and compare with the
    rendered normals away from surface boundaries (curved surfaces allow a little discretisation error)."""
    rays = torch.tensor(_camera_rays(64, 64), dtype=torch.float32).T.reshape(3, 64, 64)
    points = scenes["depth"] * rays  # (N, 3, H, W) camera-frame points
    du = points[:, :, 1:-1, 2:] - points[:, :, 1:-1, :-2]
    dv = points[:, :, :-2, 1:-1] - points[:, :, 2:, 1:-1]
    from_depth = -torch.nn.functional.normalize(torch.cross(du, dv, dim=1), dim=1)  # right x up points away
    rendered = scenes["normals"][:, :, 1:-1, 1:-1]
    edges = scenes["edges"][:, 0]
    interior = torch.nn.functional.max_pool2d(edges[:, None], 5, 1, 2)[:, 0, 1:-1, 1:-1] == 0
    cos = (from_depth * rendered).sum(1)[interior].clamp(-1, 1)
    angles = torch.rad2deg(torch.acos(cos))
    assert interior.float().mean() > 0.5
    assert angles.median() < 1.0
    assert (angles < 10).float().mean() > 0.98


def test_edges_mark_every_label_change_and_depth_discontinuity(scenes):
    sem, edges = scenes["semseg"], scenes["edges"][:, 0].bool()
    for dim in (1, 2):
        n = sem.shape[dim]
        change = sem.narrow(dim, 1, n - 1) != sem.narrow(dim, 0, n - 1)
        assert edges.narrow(dim, 1, n - 1)[change].all() and edges.narrow(dim, 0, n - 1)[change].all()
    # Inverse depth is affine in pixel coordinates on a plane, so its second difference is ~0 on the room's
    # planes and jumps at occlusions; smooth curved objects stay well below the 0.15 used for "discontinuity".
    inv = 1 / scenes["depth"][:, 0]
    d2 = (inv[:, :, 2:] - 2 * inv[:, :, 1:-1] + inv[:, :, :-2]).abs() / inv[:, :, 1:-1]
    near_edge = edges[:, :, 2:] | edges[:, :, 1:-1] | edges[:, :, :-2]
    jump = d2 > 0.15
    assert jump.sum() > 100 and near_edge[jump].all()
    room = (sem < CLASSES.index("sphere"))[:, :, 1:-1] & ~near_edge
    assert d2[room].max() < 1e-3
    assert 0.02 < edges.float().mean() < 0.3  # thin boundaries, not whole regions


def test_attributes_agree_with_the_labels(scenes):
    sem, attrs = scenes["semseg"], scenes["attributes"]
    min_px = max(1, int(0.002 * 64 * 64))
    for cls in ("sphere", "box", "cylinder"):
        present = (sem == CLASSES.index(cls)).flatten(1).sum(1) >= min_px
        assert torch.equal(attrs[:, ATTRIBUTES.index(f"has_{cls}")].bool(), present)
    objects = sem >= CLASSES.index("sphere")
    left = objects[:, :, :32].flatten(1).sum(1) > objects[:, :, 32:].flatten(1).sum(1)
    assert torch.equal(attrs[:, ATTRIBUTES.index("objects_left")].bool(), left)
    assert 0.1 < attrs.mean() < 0.9


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="split: unknown split 'dev'; valid splits: train, val, test"):
        SyntheticScenes("dev")
    with pytest.raises(ConfigError, match="image_size"):
        SyntheticScenes(image_size=4)
    with pytest.raises(IndexError):
        SyntheticScenes(size=2)[2]
    assert np.isfinite(SyntheticScenes(size=1)[0]["depth"].numpy()).all()
