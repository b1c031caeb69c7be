"""Which tensors form channel groups.

A *group* is a slice of a shared conv weight that the penalty measures with one l2 norm and the prox zeroes as a
whole. For a conv weight ``W`` of shape ``(C_out, C_in, k, k)``:

* ``mode="in"`` (default): one group per input channel, ``W[:, j]`` of size ``C_out * k * k``. A zero group means
  channel ``j`` of the previous feature map is never read by this conv.
* ``mode="out"``: one group per output channel, ``W[i]`` plus the BatchNorm ``γ_i`` and ``β_i`` that follow the
  conv (a zero filter with ``β_i != 0`` would still emit a constant). Size ``C_in * k * k + 2``.

Groups are described by [`ConvGroups`][] records that name parameters, so the penalty and the prox work on
any parameter dict with those names (a module's ``named_parameters()``, or fast weights in an inner loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

GroupMode = Literal["in", "out"]
SharedSpec = str | nn.Module | Callable[[str], bool]


@dataclass(frozen=True)
class ConvGroups:
    """The channel groups of one conv layer.

    Attributes:
        layer: module name of the conv (e.g. ``"backbone.layer1.0.conv1.conv"``).
        weight: parameter name of its weight, shape ``(C_out, C_in, k, k)``.
        dim: 1 for input-channel groups ``W[:, j]``, 0 for output-channel groups ``W[i]``.
        extras: names of 1-d parameters of length ``C_out`` whose entry ``i`` joins output group ``i``
            (the BatchNorm ``γ`` and ``β``); empty for input-channel groups.
        normalized: the conv feeds a BatchNorm directly, so the loss does not see the scale of each output filter
            ``W[i]`` (see [`keep_filter_norms_`][l2sparse.sparsity.filter_norms.keep_filter_norms_]).
    """

    layer: str
    weight: str
    dim: int
    extras: tuple[str, ...] = ()
    normalized: bool = False

    def group_size(self, params: Mapping[str, Tensor]) -> int:
        """Number of scalars in one group (the ``size`` in ``√size``)."""
        w = params[self.weight]
        return w.numel() // w.shape[self.dim] + len(self.extras)

    def num_groups(self, params: Mapping[str, Tensor]) -> int:
        return params[self.weight].shape[self.dim]


def _is_shared(shared: SharedSpec, model: nn.Module) -> Callable[[str], bool]:
    if callable(shared) and not isinstance(shared, nn.Module):
        return shared
    if isinstance(shared, nn.Module):
        prefixes = [name for name, m in model.named_modules() if m is shared]
        if not prefixes:
            raise ValueError("shared: the given module is not a submodule of the model")
        prefix = prefixes[0]
    else:
        prefix = shared
        if prefix and prefix not in dict(model.named_modules()):
            names = sorted({n.split(".")[0] for n, _ in model.named_modules() if n})
            raise ValueError(f"shared: no submodule named {prefix!r}; top-level submodules: {', '.join(names)}")
    if not prefix:
        return lambda name: True
    return lambda name: name == prefix or name.startswith(prefix + ".")


def channel_groups(model: nn.Module, shared: SharedSpec = "backbone", mode: GroupMode = "in") -> list[ConvGroups]:
    """List the channel groups of the shared conv layers of ``model``.

    Args:
        model: any module; only ``nn.Conv2d`` layers with ``groups == 1`` are grouped.
        shared: which modules are shared and therefore penalised: a submodule name prefix (``"backbone"``, or
            ``""`` for the whole model), the submodule itself, or a predicate on module names.
        mode: ``"in"`` for input-channel groups, ``"out"`` for output-channel groups with the conv's BatchNorm.
            Which BatchNorm normalises a conv comes from the model's declared wiring: every ``(conv, bn)``
            producer of a ``channel_spaces()`` that the model or a submodule describes. Only a conv that no such
            description covers (a plain user module) is paired with the ``BatchNorm2d`` registered right after it,
            when its ``num_features`` matches. A conv without a BatchNorm gets groups of its filter (and bias)
            alone. Either way a conv with a BatchNorm is marked ``normalized``.

    Returns:
        One [`ConvGroups`][] per shared conv, in module order.
    """
    if mode not in ("in", "out"):
        raise ValueError(f"mode: expected 'in' or 'out', got {mode!r}")
    is_shared = _is_shared(shared, model)
    modules = list(model.named_modules())
    name_of = {id(m): n for n, m in modules}
    declared = declared_batchnorms(model)
    groups = []
    for i, (name, m) in enumerate(modules):
        if not isinstance(m, nn.Conv2d) or m.groups != 1 or not is_shared(name):
            continue
        extras: tuple[str, ...] = ()
        if id(m) in declared:
            bn = declared[id(m)]
        else:
            nxt = modules[i + 1][1] if i + 1 < len(modules) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels else None
        has_bn = bn is not None
        if mode == "out":
            if m.bias is not None:
                extras += (f"{name}.bias",)
            if has_bn and bn.affine:
                extras += (f"{name_of[id(bn)]}.weight", f"{name_of[id(bn)]}.bias")
        groups.append(ConvGroups(name, f"{name}.weight", 1 if mode == "in" else 0, extras, normalized=has_bn))
    if not groups:
        raise ValueError("channel_groups: the shared part of the model has no Conv2d layer to group")
    return groups


def declared_batchnorms(model: nn.Module) -> dict[int, nn.BatchNorm2d | None]:
    """``{id(conv): its BatchNorm or None}`` for every conv that a ``channel_spaces()`` of ``model`` or of one of its
    submodules names as a producer; empty when nothing describes its wiring."""
    pairs: dict[int, nn.BatchNorm2d | None] = {}
    described: list[str] = []  # a module's description covers its submodules (a model's, its backbone's)
    for name, m in model.named_modules():
        describe = getattr(m, "channel_spaces", None)
        if not callable(describe) or any(p == "" or name.startswith(p + ".") for p in described):
            continue
        described.append(name)
        spaces = describe()
        for space in spaces[0] if isinstance(spaces, tuple) else spaces:
            pairs.update((id(conv), bn) for conv, bn in space.producers)
    return pairs


def group_matrix(params: Mapping[str, Tensor], g: ConvGroups) -> Tensor:
    """The groups of one layer as rows of a matrix, shape ``(num_groups, group_size)``."""
    w = params[g.weight]
    rows = w.transpose(0, 1) if g.dim == 1 else w
    rows = rows.flatten(1)
    if g.extras:
        rows = torch.cat([rows, torch.stack([params[e] for e in g.extras], dim=1)], dim=1)
    return rows


def group_norms(params: Mapping[str, Tensor], g: ConvGroups) -> Tensor:
    """l2 norm of every group of one layer, shape ``(num_groups,)``."""
    return torch.linalg.vector_norm(group_matrix(params, g), dim=1)
