"""NYU-v2 loaders on tiny files written in both on-disk layouts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from fixtures import write_mtan, write_nyud_mt

from l2sparse.data import DataError
from l2sparse.data.nyuv2 import NYUv2
from l2sparse.data.transforms import random_scale_crop_flip


def test_mtan_layout_shapes_dtypes_and_invalid_values(tmp_path):
    root = write_mtan(tmp_path / "nyu")
    ds = NYUv2(root, "train")
    assert ds.layout == "mtan" and len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (3, 12, 16) and item["image"].dtype == torch.float32
    assert item["semseg"].dtype == torch.int64 and item["semseg"].min() >= -1 and item["semseg"].max() <= 12
    assert item["depth"].shape == (1, 12, 16) and item["depth"][0, 0, 0] == 0
    assert item["normals"].shape == (3, 12, 16) and (item["normals"][:, 0, 0] == 0).all()
    np.testing.assert_array_equal(item["semseg"].numpy(), np.load(root / "train/label/0.npy").astype(np.int64))
    assert len(NYUv2(root, "test")) == 2  # test reads the val folder


def test_nyud_mt_layout_maps_void_to_ignore(tmp_path):
    root = write_nyud_mt(tmp_path / "nyud")
    ds = NYUv2(root, "train")
    assert ds.layout == "nyud_mt" and ds.ids == ["0001", "0002"]
    item = ds[0]
    raw = np.array(__import__("PIL.Image").Image.open(root / "segmentation/0001.png"))
    np.testing.assert_array_equal(item["semseg"].numpy(), raw.astype(np.int64) - 1)  # 0 = void -> -1
    assert item["semseg"].min() >= -1 and item["semseg"].max() <= 39
    assert set(item["edges"].unique().tolist()) <= {0.0, 1.0} and item["edges"].shape == (1, 12, 16)
    assert NYUv2(root, "val").ids == ["0003"]


def test_resize_uses_nearest_for_labels(tmp_path):
    ds = NYUv2(write_mtan(tmp_path / "nyu"), "train", image_size=(6, 8))
    item = ds[1]
    assert item["image"].shape == (3, 6, 8) and item["semseg"].shape == (6, 8)
    raw = np.load(tmp_path / "nyu/train/label/1.npy")
    assert set(item["semseg"].unique().tolist()) <= set(np.unique(raw).astype(int).tolist())


def test_augmentation_scales_depth_and_flips_normals():
    h, w = 8, 8
    item = {
        "image": torch.rand(3, h, w),
        "depth": torch.full((1, h, w), 2.0),
        "normals": torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, h, w).clone(),
        "semseg": torch.zeros(h, w, dtype=torch.int64),
    }
    seen_scales, seen_flip = set(), False
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        out = random_scale_crop_flip(item, g)
        seen_scales.add(round(2.0 / out["depth"][0, 0, 0].item(), 2))
        seen_flip |= bool(out["normals"][0, 0, 0] == -1)
        assert out["image"].shape == (3, h, w) and out["semseg"].dtype == torch.int64
    assert seen_scales == {1.0, 1.2, 1.5} and seen_flip


def _label(root, value) -> None:
    """Plant one bad value in the first training label map."""
    label = np.load(root / "train/label/0.npy")
    label[3, 4] = value
    np.save(root / "train/label/0.npy", label)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: None, "NYU-v2 root folder does not exist"),
        (lambda r: __import__("shutil").rmtree(r / "train/depth"), "missing 'depth' folder"),
        (lambda r: (r / "train/normal/1.npy").unlink(), "missing 1 file(s), e.g. 1.npy"),
        (lambda r: (r / "train/image/0.npy").write_bytes(b"not numpy"), "0.npy: not a readable .npy array"),
        (lambda r: np.save(r / "train/depth/0.npy", np.ones((5, 5), np.float32)), "does not match its image"),
        (lambda r: _label(r, 13), "0.npy: labels must be integers in -1..12 (-1 = ignore), got 13"),
        (lambda r: _label(r, 255), "labels must be integers in -1..12 (-1 = ignore), got 255"),
        (lambda r: _label(r, -5), "labels must be integers in -1..12 (-1 = ignore), got -5"),
        (lambda r: _label(r, 2.5), "labels must be integers in -1..12 (-1 = ignore), got 2.5"),
        (lambda r: np.save(r / "train/label/0.npy", np.zeros((12, 16, 1))), "expected an (H, W) label array"),
        (lambda r: np.save(r / "train/label/0.npy", np.full((12, 16), "a")), "label must hold real numbers, got dtype"),
        (lambda r: np.save(r / "train/normal/0.npy", np.zeros((12, 16))), "expected an (H, W, 3) normal array"),
        (lambda r: np.save(r / "train/normal/0.npy", np.zeros((12, 16, 4))), "expected an (H, W, 3) normal array"),
        (lambda r: np.save(r / "train/depth/0.npy", np.ones((12, 16, 2))), "0.npy: expected an (H, W) or (H, W, 1)"),
        (lambda r: np.save(r / "train/depth/0.npy", np.ones((12, 16), complex)), "depth must hold real numbers"),
        (lambda r: np.save(r / "train/depth/0.npy", np.full((12, 16), np.inf)), "depth holds NaN or infinite"),
        (lambda r: np.save(r / "train/depth/0.npy", -np.ones((12, 16))), "depth must be ≥ 0 metres"),
        (lambda r: np.save(r / "train/image/0.npy", np.full((12, 16, 3), 255, np.uint8)), "floats in [0, 1], got 255"),
        (lambda r: np.save(r / "train/image/0.npy", np.full((12, 16, 3), np.nan)), "image holds NaN or infinite"),
        (lambda r: np.save(r / "train/image/0.npy", np.zeros((12, 16))), "0.npy: expected an (H, W, 3) image array"),
    ],
)
def test_bad_files_are_named(tmp_path, break_it, message):
    root = tmp_path / "nyu"
    if "root folder" not in message:
        write_mtan(root)
        break_it(root)
    with pytest.raises(DataError, match=re.escape(message)):
        NYUv2(root, "train")[0]
