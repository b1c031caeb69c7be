"""A task is data: the dataset target it predicts, its head, its loss and its metrics, read from a TOML file.

Task file fields (``<dataset>/<name>.toml`` below a tasks folder):

    name = "depth"                  # unique within its dataset
    dataset = "synthetic"           # a registered dataset
    target = "depth"                # key of the target in a dataset item
    head = "dense"                  # "dense" (per pixel) or "pooled" (per image)
    out_channels = 1
    loss = "l1_valid"               # a built-in loss, or an importable "package.module:function"
    metrics = "depth"               # segmentation | depth | normals | binary | regression
    description = "..."             # optional
    attributes = ["Smiling"]        # optional: keep only these columns of an attribute target
    classes = "3class"              # optional: a class merge the dataset defines
    transform = "pkg.mod:function"  # optional: derive a new target from the dataset's, (B, ...) -> (B, ...)
    primary = "abs_err"             # optional: the metric tables and Δm use (default: the family's first)
    [higher_is_better]              # optional: per metric, defaults to the metric family's
    abs_err = false

Split files (``splits/<name>.toml`` below a tasks folder) name the seen (meta-train) and unseen (held-out) tasks:

    name = "synthetic-default"
    dataset = "synthetic"
    seen = ["semseg", "depth"]
    unseen = ["normals"]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2sparse.errors import TaskFileError
from l2sparse.losses import LOSSES
from l2sparse.metrics import HIGHER_IS_BETTER, METERS, METRIC_NAMES

TASK_FIELDS = {
    "name": str,
    "dataset": str,
    "target": str,
    "head": str,
    "out_channels": int,
    "loss": str,
    "metrics": str,
    "description": str,
    "attributes": list,
    "classes": str,
    "transform": str,
    "primary": str,
    "higher_is_better": dict,
}
REQUIRED_TASK_FIELDS = ("name", "dataset", "target", "head", "out_channels", "loss", "metrics")
SPLIT_FIELDS = {"name": str, "dataset": str, "seen": list, "unseen": list, "description": str}


def import_object(path: str) -> Callable:
    """``"package.module:function"`` or ``"package.module.function"`` to the object."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise ImportError(f"{path!r} is not 'package.module:function'")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ImportError(f"{e}; is the folder that holds it on PYTHONPATH?") from e
    return getattr(found, attr)


@dataclass(frozen=True)
class Task:
    """One prediction task (see the module docstring for the file format).

    ``select`` (attribute column indices) and ``lut`` (class merge table) are resolved from the dataset's metadata
    when the file is loaded.
    """

    name: str
    dataset: str
    target: str
    head: str
    out_channels: int
    loss: str
    metrics: str
    description: str = ""
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)
    select: tuple[int, ...] | None = None
    lut: tuple[int, ...] | None = None
    transform: str = ""
    source: str = ""
    primary: str = ""

    @property
    def primary_metric(self) -> str:
        """The metric that tables and Δm report: ``primary`` from the file, else the family's first metric."""
        return self.primary or next(iter(self.higher_is_better))

    @property
    def loss_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The loss ``(prediction, target) -> scalar``; it first checks the target's shape (``check_target``)."""
        fn = LOSSES[self.loss] if self.loss in LOSSES else import_object(self.loss)

        def loss(pred: Tensor, target: Tensor) -> Tensor:
            self.check_target(pred, target)
            value = fn(pred, target)
            if not (isinstance(value, Tensor) and value.numel() == 1):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise TaskFileError(
                    f"task {self.name!r} ({self.source or 'defined in code'}): loss {self.loss!r} returned {got}, "
                    "expected a scalar tensor (reduce it, e.g. with .mean())"
                )
            return value.reshape(())

        return loss

    def check_target(self, pred: Tensor, target: Tensor) -> None:
        """Raise ``TaskFileError`` naming the task and its file unless ``target`` fits the head's output ``pred``.

        Segmentation targets are labels ``(B, H, W)`` for logits ``(B, C, H, W)``; every other target has the
        prediction's shape: ``(B, C, H, W)`` from a dense head, ``(B, C)`` from a pooled one.
        """
        want = (pred.shape[0], *pred.shape[2:]) if self.metrics == "segmentation" else tuple(pred.shape)
        if tuple(target.shape) != tuple(want):
            labels = f", expected labels {tuple(want)}" if self.metrics == "segmentation" else ""
            hint = f"; check what transform {self.transform!r} returns" if self.transform else ""
            raise TaskFileError(
                f"task {self.name!r} ({self.source or 'defined in code'}): target shape {tuple(target.shape)} does "
                f"not fit the head's output {tuple(pred.shape)}{labels}{hint}"
            )

    def new_meter(self):
        return METERS[self.metrics](self.out_channels) if self.metrics == "segmentation" else METERS[self.metrics]()

    def target_of(self, batch: Mapping[str, Tensor]) -> Tensor:
        """This task's target from a batch: the dataset key, then column selection, class merge and transform.

        A dense target is ``(B, C, H, W)`` (labels ``(B, H, W)``), an image-level one ``(B, C)``; the transform
        receives that tensor and returns the task's target.
        """
        y = batch[self.target]
        if self.select is not None:
            y = y[..., list(self.select)]
        if self.lut is not None:
            lut = torch.tensor(self.lut, dtype=y.dtype, device=y.device)
            y = torch.where(y >= 0, lut[y.clamp_min(0)], y)
        if self.transform:
            y = import_object(self.transform)(y)
        return y


@dataclass(frozen=True)
class Split:
    """Which tasks of a dataset are seen (meta-train) and which are unseen (held out)."""

    name: str
    dataset: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    description: str = ""
    source: str = ""


def _check_fields(raw: Mapping, fields: Mapping[str, type], required: Sequence[str], where: str) -> None:
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise TaskFileError(f"{where}: unknown field(s) {unknown}; valid fields: {', '.join(fields)}")
    missing = [f for f in required if f not in raw]
    if missing:
        raise TaskFileError(f"{where}: missing field(s) {missing}")
    for k, v in raw.items():
        if not isinstance(v, fields[k]) or (fields[k] is int and isinstance(v, bool)):
            raise TaskFileError(f"{where}: field {k!r} must be {fields[k].__name__}, got {type(v).__name__}")


def _check_callable(path: str, field_name: str, where: str, what: str) -> None:
    """Import a task file's ``"module:function"`` now, so that any failure (a missing module, a module that raises
    or does not compile, a missing name, an object that is not a function) names the file at validation time."""
    try:
        found = import_object(path)
    except (ImportError, AttributeError) as e:
        raise TaskFileError(f"{where}: {field_name} {path!r} is {what} ({e})") from e
    except (Exception, SystemExit) as e:  # the user's module raised (or exited) while imported; SyntaxError too
        raise TaskFileError(
            f"{where}: {field_name} {path!r}: importing it raised {type(e).__name__}: {e}".replace("\n", " ")
        ) from e
    if not callable(found):
        raise TaskFileError(f"{where}: {field_name} {path!r} is a {type(found).__name__}, not a function")


def parse_task(raw: Mapping, where: str, attribute_names: Sequence[str], merges: Mapping[str, Sequence[int]]) -> Task:
    """Validate a task file's contents against the dataset's attribute names and class merges."""
    _check_fields(raw, TASK_FIELDS, REQUIRED_TASK_FIELDS, where)
    if raw["head"] not in ("dense", "pooled"):
        raise TaskFileError(f"{where}: head must be 'dense' or 'pooled', got {raw['head']!r}")
    if raw["out_channels"] < 1:
        raise TaskFileError(f"{where}: out_channels must be ≥ 1")
    if raw["metrics"] not in METERS:
        raise TaskFileError(f"{where}: unknown metrics {raw['metrics']!r}; valid: {', '.join(METERS)}")
    if raw["loss"] not in LOSSES:
        _check_callable(raw["loss"], "loss", where, f"neither a built-in ({', '.join(LOSSES)}) nor importable")
    if "transform" in raw:
        _check_callable(raw["transform"], "transform", where, "not importable")
    hib = dict(HIGHER_IS_BETTER[raw["metrics"]])
    given = raw.get("higher_is_better", {})
    bad = sorted(set(given) - set(METRIC_NAMES[raw["metrics"]]))
    if bad or not all(isinstance(v, bool) for v in given.values()):
        names = ", ".join(METRIC_NAMES[raw["metrics"]])
        raise TaskFileError(f"{where}: higher_is_better takes true/false for {names}; got {bad or given}")
    hib.update(given)
    if "primary" in raw and raw["primary"] not in hib:
        raise TaskFileError(
            f"{where}: unknown primary metric {raw['primary']!r}; valid for {raw['metrics']!r}: {', '.join(hib)}"
        )
    select = None
    if "attributes" in raw:
        unknown = [a for a in raw["attributes"] if a not in attribute_names]
        if unknown or not raw["attributes"]:
            raise TaskFileError(
                f"{where}: unknown attribute(s) {unknown or '[]'}; valid: {', '.join(attribute_names) or 'none'}"
            )
        select = tuple(attribute_names.index(a) for a in raw["attributes"])
        if len(select) != raw["out_channels"]:
            raise TaskFileError(f"{where}: {len(select)} attributes but out_channels = {raw['out_channels']}")
    lut = None
    if "classes" in raw:
        if raw["classes"] not in merges:
            raise TaskFileError(f"{where}: unknown classes {raw['classes']!r}; valid: {', '.join(merges) or 'none'}")
        lut = tuple(merges[raw["classes"]])
        if max(lut) + 1 != raw["out_channels"]:
            raise TaskFileError(f"{where}: classes {raw['classes']!r} has {max(lut) + 1} classes, out_channels differs")
    plain = {k: raw[k] for k in REQUIRED_TASK_FIELDS}
    return Task(
        **plain,
        description=raw.get("description", ""),
        higher_is_better=hib,
        select=select,
        lut=lut,
        transform=raw.get("transform", ""),
        source=where,
        primary=raw.get("primary", ""),
    )


def parse_split(raw: Mapping, where: str) -> Split:
    _check_fields(raw, SPLIT_FIELDS, ("name", "dataset", "seen", "unseen"), where)
    overlap = sorted(set(raw["seen"]) & set(raw["unseen"]))
    if overlap:
        raise TaskFileError(f"{where}: task(s) {overlap} are both seen and unseen")
    return Split(
        raw["name"], raw["dataset"], tuple(raw["seen"]), tuple(raw["unseen"]), raw.get("description", ""), where
    )
