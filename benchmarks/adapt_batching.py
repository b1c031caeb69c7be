"""Adaptation jobs one after another against the same jobs vectorised with ``torch.func.vmap``, side by side.

    python benchmarks/adapt_batching.py                 # tiny model, 32 px, 4 inits, batch 16, 30 steps
    python benchmarks/adapt_batching.py --model small --image-size 64

The jobs of one task and seed share their images and batch indices across inits (``adapt`` draws both from the
task and the seed), so ``J`` inits can step together: their parameters stacked (``stack_module_state``), one
``vmap``-ed ``functional_call`` forward and backward per step, one Adam over the stacked tensors. This measures the
time of a fine-tuning step (forward, backward, Adam) both ways, rounds alternating and the best round counting,
and checks that the vectorised losses match the sequential ones before any time is compared.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from l2sparse.models import create_model
from l2sparse.tasks import load_registry


def models(model: str, inits: int) -> list[torch.nn.Module]:
    tasks = load_registry().get("synthetic", ["has_box"])
    out = []
    for j in range(inits):
        torch.manual_seed(j)
        out.append(create_model(model, tasks).train())
    return out


def sequential(nets: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, list]:
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    started, losses = time.perf_counter(), []
    for _ in range(steps):
        step = []
        for net, opt in zip(nets, opts, strict=True):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)["has_box"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step.append(loss.item())
        losses.append(step)
    return time.perf_counter() - started, losses


def vectorised(nets: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, list]:
    params, buffers = stack_module_state(nets)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    opt = torch.optim.Adam(params.values(), lr=1e-3)

    def loss_of(p: dict, b: dict) -> torch.Tensor:
        pred = functional_call(base, (p, b), (x,))["has_box"]
        return torch.nn.functional.binary_cross_entropy_with_logits(pred, y)

    batched = vmap(loss_of)
    started, losses = time.perf_counter(), []
    for _ in range(steps):
        loss = batched(params, buffers)  # (J,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # each init's gradient is that of its own loss
        opt.step()
        losses.append(loss.tolist())
    return time.perf_counter() - started, losses


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--inits", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
    y = (torch.rand(args.batch_size, 1, generator=g) < 0.5).float()
    _, ref = sequential(models(args.model, args.inits), x, y, 3)
    _, vec = vectorised(models(args.model, args.inits), x, y, 3)
    gap = max(abs(a - b) for r, v in zip(ref, vec, strict=True) for a, b in zip(r, v, strict=True))
    assert gap < 1e-4, f"vectorised losses differ from sequential ones by {gap}"
    times = {"sequential": [], "vmap": []}
    for _ in range(args.rounds):
        times["sequential"].append(sequential(models(args.model, args.inits), x, y, args.steps)[0])
        times["vmap"].append(vectorised(models(args.model, args.inits), x, y, args.steps)[0])
    best = {k: min(v) / args.steps * 1e3 for k, v in times.items()}
    print(f"model {args.model}, {args.image_size} px, {args.inits} inits, batch {args.batch_size}, "
          f"{args.threads} threads; losses of 3 steps agree to {gap:.1e}")  # fmt: skip
    print(f"{'':>12} {'ms per step (all inits)':>24} {'ratio':>6}")
    for name, ms in best.items():
        print(f"{name:>12} {ms:24.1f} {best['sequential'] / ms:6.2f}")
    return {"ms_per_step": best, "loss_gap": gap}


if __name__ == "__main__":
    main()
