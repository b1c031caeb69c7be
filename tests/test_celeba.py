"""CelebAMask-HQ loader: fixture files in both mask layouts, and the real samples when ../shared/data is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import write_celeba

from l2sparse.data import DataError
from l2sparse.data.celeba import ATTRIBUTES, CLASSES, CelebAMaskHQ, split_of
from l2sparse.tasks import load_registry

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PARSING, THUMBS = SHARED / "celebamask_hq_parsing", SHARED / "celeba_hq_64"
needs_shared = pytest.mark.skipif(not PARSING.is_dir(), reason="real CelebAMask-HQ samples not in ../shared/data")


def test_split_by_id():
    assert [split_of(i) for i in (0, 1, 2, 10, 11, 19)] == ["test", "val", "train", "test", "val", "train"]


@pytest.mark.parametrize("masks", ["merged", "parts"])
def test_masks_and_attributes(tmp_path, masks):
    root = write_celeba(tmp_path / "c", masks=masks)
    ds = CelebAMaskHQ(root, "train", image_size=8, targets=("faceparts", "attributes"))
    assert ds.ids == [2, 3, 12]
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["faceparts"].shape == (8, 8)
    assert item["faceparts"].dtype == torch.int64 and item["attributes"].shape == (40,)
    assert item["attributes"].tolist() == [float(k % 2 == 0) for k in range(40)]  # id 2: even columns are +1
    full = CelebAMaskHQ(root, "train", image_size=16, targets=("faceparts",))[0]["faceparts"]
    expected = np.arange(256).reshape(16, 16) % 19
    if masks == "parts":  # only skin (1) and hair (13) part files were written
        expected = np.where(np.isin(expected, (1, 13)), expected, 0)
    np.testing.assert_array_equal(full.numpy(), expected)


def test_three_class_merge_through_the_task(tmp_path):
    ds = CelebAMaskHQ(write_celeba(tmp_path / "c"), "train", image_size=16, targets=("faceparts",))
    task = load_registry().get("celeba", ["faceparts3"])[0]
    raw = ds[0]["faceparts"]
    merged = task.target_of({"faceparts": raw})
    for cls, want in (("background", 0), ("hair", 1), ("skin", 2), ("nose", 2), ("hat", 0), ("cloth", 0)):
        assert (merged[raw == CLASSES.index(cls)] == want).all()
    smiling = load_registry().get("celeba", ["Smiling"])[0]
    picked = smiling.target_of({"attributes": torch.arange(40.0).expand(2, 40)})
    assert picked.tolist() == [[ATTRIBUTES.index("Smiling")]] * 2


def test_images_without_masks_serve_attribute_tasks(tmp_path):
    root = write_celeba(tmp_path / "c", mask_ids=(2,))
    assert len(CelebAMaskHQ(root, "train", targets=("attributes",))) == 3
    assert CelebAMaskHQ(root, "train", targets=("faceparts", "attributes")).ids == [2]
    no_masks = write_celeba(tmp_path / "d", masks=None)
    assert len(CelebAMaskHQ(no_masks, "train")) == 3
    with pytest.raises(DataError, match="face-part masks asked for but neither"):
        CelebAMaskHQ(no_masks, "train", targets=("faceparts",))


def _rewrite_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[n] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: None, "CelebAMask-HQ root folder does not exist"),
        (lambda r: __import__("shutil").rmtree(r / "CelebA-HQ-img"), "missing 'CelebA-HQ-img' folder"),
        (lambda r: _rewrite_line(r / "CelebAMask-HQ-attribute-anno.txt", 0, "7"), "header says 7 images but"),
        (lambda r: _rewrite_line(r / "CelebAMask-HQ-attribute-anno.txt", 1, "Smiling Male"), "line 2 must list"),
        (lambda r: _rewrite_line(r / "CelebAMask-HQ-attribute-anno.txt", 2, "0.jpg 1 -1"), r"anno.txt:3: expected"),
        (lambda r: (r / "CelebA-HQ-img/2.jpg").write_bytes(b"broken"), "2.jpg: not a readable image"),
        (
            lambda r: [(r / f"CelebA-HQ-img/{i}.jpg").unlink() for i in (3, 10, 12)],
            r"anno.txt: 3 row\(s\) name images missing from .*CelebA-HQ-img \(first: 3.jpg\)",
        ),
        (
            lambda r: _rewrite_line(r / "CelebAMask-HQ-attribute-anno.txt", 3, "one.jpg" + " 1" * 40),
            r"anno.txt:4: expected '<integer id>.jpg'",
        ),
        (
            lambda r: (r / "CelebAMask-HQ-attribute-anno.txt").write_bytes(b"6\n\xff\xfe\n"),
            r"anno.txt: not UTF-8 text \(byte 2\)",
        ),
        (
            lambda r: __import__("PIL.Image").Image.new("L", (9, 16)).save(r / "CelebAMask-HQ-mask/2.png"),
            r"2.png: mask of size \(16, 9\) does not match its image \(16, 16\)",
        ),
    ],
)
def test_bad_files_are_named(tmp_path, break_it, message):
    root = tmp_path / "c"
    if "root folder" not in message:
        write_celeba(root)
        break_it(root)
    with pytest.raises(DataError, match=message):
        CelebAMaskHQ(root, "train", targets=("faceparts", "attributes"))[0]


@needs_shared
def test_real_face_parts_agree_with_the_eyeglasses_attribute():
    ds = CelebAMaskHQ(PARSING, "train", image_size=64, targets=("faceparts", "attributes"))
    assert len(ds) > 700
    eyeg, glasses = CLASSES.index("eye_g"), ATTRIBUTES.index("Eyeglasses")
    agree = [bool((ds[i]["faceparts"] == eyeg).any()) == bool(ds[i]["attributes"][glasses]) for i in range(300)]
    assert np.mean(agree) > 0.95
    mask = ds[0]["faceparts"]
    rows = lambda c: torch.nonzero(mask == CLASSES.index(c))[:, 0].float().mean()  # noqa: E731
    assert rows("hair") < rows("nose") < rows("neck")  # hair above the nose above the neck


@pytest.mark.skipif(not THUMBS.is_dir(), reason="real 64 px CelebA-HQ images not in ../shared/data")
def test_real_thumbnails_serve_attributes():
    ds = CelebAMaskHQ(THUMBS, "test", image_size=64, size=50)
    assert len(ds) == 50 and ds.ids[:3] == [0, 10, 20]
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].min() >= 0 and item["image"].max() <= 1
    assert set(item["attributes"].unique().tolist()) <= {0.0, 1.0}
