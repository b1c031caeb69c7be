"""Export a (compacted, fused) model for inference with ``torch.export``, and from there to ONNX and ONNX Runtime.

The batch size and the image height and width stay dynamic (``Dim.AUTO``: ``torch.export`` works out what the
strides and dilations allow), so one exported program serves every input size the model does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram


def export_model(model: nn.Module, example: Tensor) -> ExportedProgram:
    """``torch.export`` of ``model``'s forward on images, every task, for inference.

    Args:
        model: a model in eval mode taking images ``(B, 3, H, W)``; a multi-task model returns ``{task: output}``.
        example: example images ``(B, 3, H, W)`` with ``B``, ``H``, ``W`` ≥ 2 (``torch.export`` fixes a dimension
            it sees at size 1); they stay dynamic in the program, which runs at batch 1 too.

    Returns:
        The exported program; ``program.module()(x)`` gives what ``model(x)`` gives.

    Raises:
        ValueError: ``model`` is in train mode (BatchNorm would export its batch-statistics path), or ``example``
            has a batch size, height or width of 1.
    """
    if model.training:
        raise ValueError("export_model exports for inference: call model.eval() first")
    if example.dim() != 4 or min(example.shape[0], example.shape[2], example.shape[3]) < 2:
        raise ValueError(f"example: expected images (B, 3, H, W) with B, H, W >= 2, got {tuple(example.shape)}")
    dims = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=(dims,))


def export_onnx(program: ExportedProgram, path: str | Path) -> None:
    """Write an exported program (from [`export_model`][l2sparse.sparsity.export.export_model]) as ONNX to ``path``.

    Needs the ``onnx`` and ``onnxscript`` packages (``torch.onnx``'s exporter). The ONNX graph has one input ``x``
    ``(B, 3, H, W)`` with ``B``, ``H``, ``W`` dynamic, and one output per task, named by the task, in the order the
    model returns them.
    """
    out_spec = program.call_spec.out_spec
    names = list(out_spec.context) if out_spec.type is dict else None
    torch.onnx.export(program, f=str(path), output_names=names, dynamo=True)


def load_onnx(path: str | Path, threads: int | None = None) -> Callable[[Tensor], dict[str, Tensor]]:
    """Run an ONNX file written by [`export_onnx`][l2sparse.sparsity.export.export_onnx] in ONNX Runtime.

    On the CPU this is the fastest way measured to run a compacted model (docs/benchmarks.md, "Compaction"): at
    these small channel counts the runtime takes a fraction of eager PyTorch's time even for the dense model.

    Args:
        path: the ``.onnx`` file of a multi-task model.
        threads: ONNX Runtime's intra-op threads (``None``: its default, one per physical core).

    Returns:
        A function of images ``(B, 3, H, W)`` (float32, any ``B``, ``H``, ``W`` the model takes) that returns
        ``{task: output}`` as CPU tensors, in the model's task order, like the model itself.

    Raises:
        ModuleNotFoundError: ``onnxruntime`` is not installed (``pip install 'l2sparse[export]'``).
    """
    try:
        import onnxruntime
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("load_onnx needs onnxruntime: pip install 'l2sparse[export]'") from e
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (image_input,) = (i.name for i in session.get_inputs())
    names = [o.name for o in session.get_outputs()]

    def run(images: Tensor) -> dict[str, Tensor]:
        outputs = session.run(None, {image_input: images.detach().cpu().contiguous().numpy()})
        return {name: torch.from_numpy(out) for name, out in zip(names, outputs, strict=True)}

    return run
