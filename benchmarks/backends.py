"""Inner-loop backends side by side: time per meta-iteration and peak memory, with ratios to ``higher``.

    python benchmarks/backends.py                     # tiny and mid-size configs, second- and first-order
    python benchmarks/backends.py --configs tiny --orders second_order --iters 5
    python benchmarks/backends.py --profile mid second_order torchfunc   # where a meta-iteration spends its time
    python benchmarks/backends.py --floor             # plus the floor: the same ops with no prox and no backend

Each (config, order, backend) runs in its own subprocess, so its peak resident memory (``ru_maxrss`` after the
first meta-batch and the timed meta-iterations, minus before them) is its own; rounds alternate between backends
and the best round counts. Every backend runs the same model init, episodes and mode; their hypergradients (dL/dρ
and the meta-init gradient norm of the first iteration) are printed and checked to agree before any time is
compared.

``--floor`` adds a row per config and order that is not a backend: the episode's forward passes, inner gradients
(with ``create_graph`` where the mode is exact) and outer backward written out bare over
``torch.func.functional_call``, with plain SGD inner steps and no inner prox. Its gradients differ (no λ path), so it
is left out of the agreement check; its time is what the convolutions and BatchNorms of a meta-iteration cost by
themselves, so ``higher``'s time over it bounds what any backend running the same ops with the same kernels can gain
over ``higher``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside the workers only
    from torch import Tensor, nn

    from l2sparse.meta import InnerConfig
    from l2sparse.sparsity import ConvGroups
    from l2sparse.tasks import Task

CONFIGS = {
    # name: (model, image size, support, query, inner steps, meta batch)
    "tiny": ("tiny", 32, 8, 8, 3, 2),
    "mid": ("small", 64, 16, 16, 3, 2),
}


CATEGORIES = {  # torch.profiler op name -> part of a meta-iteration, first match wins
    "convolution_backward": "conv backward (inner gradients, outer backward, double backward)",
    "convolution": "conv forward",
    "batch_norm": "BatchNorm forward/backward",
    "aten::sum": "reductions (BatchNorm double backward, broadcasting)",
    "norm": "prox group norms",
}


def category(op: str) -> str:
    return next((c for key, c in CATEGORIES.items() if key in op), "other (elementwise, copies, losses, prox)")


def profile(config: str, order: str, backend: str) -> None:
    """Self CPU time of one (config, order, backend) meta-iteration by op category, from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    s = setup(config, order, backend)
    step(s)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step(s)
    parts: dict[str, float] = {}
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            parts[category(e.key)] = parts.get(category(e.key), 0.0) + e.self_cpu_time_total
    total = sum(parts.values())
    print(f"{config} {order} {backend}: self CPU time of aten ops over 2 meta-iterations, {total / 2e3:.0f} ms each")
    for name, t in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * t / total:5.1f}%  {name}")


class FloorLoop:
    """The ops of a meta-iteration without the inner prox or any backend machinery (``--floor``): ``torchfunc``'s own
    inner loop given no groups, so its prox passes every parameter through. A reference, not a backend (no λ path,
    so different gradients). The outer step (``meta_update``: Adam and the meta-init's prox) is the same as for the
    backends."""

    def __init__(self) -> None:
        from l2sparse.meta import get_backend

        self.torchfunc = get_backend("torchfunc")

    def query_losses(
        self,
        model: nn.Module,
        groups: Sequence[ConvGroups],
        lam: Tensor,
        episode: Mapping,
        tasks: Sequence[Task],
        cfg: InnerConfig,
    ) -> dict[str, Tensor]:
        """Per-task query losses after ``cfg.steps`` plain SGD steps on the support images ``(B, 3, H, W)``;
        ``groups`` is ignored."""
        return self.torchfunc.query_losses(model, (), lam, episode, tasks, cfg)


def setup(config: str, order: str, backend: str) -> dict:
    """Model, channel groups, ρ, optimiser, episode sampler and backend of one benchmark config (seeded, so every
    backend starts from the same init and sees the same episodes)."""
    import torch

    from l2sparse.data.episodes import EpisodeSampler
    from l2sparse.data.synthetic import SyntheticScenes
    from l2sparse.meta import InnerConfig, get_backend
    from l2sparse.models import create_model
    from l2sparse.sparsity import channel_groups
    from l2sparse.tasks import load_registry

    torch.set_num_threads(2)
    model_name, size, support, query, steps, meta_batch = CONFIGS[config]
    tasks = load_registry().seen("synthetic-default")
    data = SyntheticScenes("train", 64, size).tensors()
    torch.manual_seed(0)
    model = create_model(model_name, tasks)
    rho = torch.tensor(0.05).log().requires_grad_(True)
    return {
        "model": model,
        "groups": channel_groups(model),
        "rho": rho,
        "opt": torch.optim.Adam([{"params": model.parameters(), "lr": 1e-3}, {"params": [rho], "lr": 0.05}]),
        "sampler": EpisodeSampler(data, tasks, support, query, subset=len(tasks), meta_batch=meta_batch, seed=0),
        "loop": FloorLoop() if backend == "floor" else get_backend(backend),
        "inner": InnerConfig(steps, 0.05, order),
        "tasks": tasks,
    }


def step(s: dict) -> None:
    """One meta-iteration on a fresh meta-batch."""
    from l2sparse.meta.metasparsity import meta_update

    meta_update(s["model"], s["groups"], s["rho"], s["loop"], s["sampler"].sample(), s["tasks"], s["inner"], s["opt"])


def worker(config: str, order: str, backend: str, iters: int) -> None:
    s = setup(config, order, backend)
    model, rho = s["model"], s["rho"]
    # from here: the first meta-batch's graphs often set the process's peak, so the growth is taken over all of it
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # hypergradients of the first meta-batch, for the cross-backend check
    first = s["sampler"].sample()
    losses = [
        sum(s["loop"].query_losses(model, s["groups"], rho.exp(), ep, s["tasks"], s["inner"]).values()) for ep in first
    ]
    sum(losses).backward()
    d_rho = float("nan") if rho.grad is None else rho.grad.item()  # the floor has no λ path
    check = {"d_rho": d_rho, "grad_norm": sum(p.grad.norm() ** 2 for p in model.parameters()).item() ** 0.5}
    s["opt"].zero_grad()

    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step(s)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    times.sort()
    print(json.dumps({"ms": 1e3 * times[len(times) // 2], "peak_mib": peak / 1024, **check}))


def mem_ratio(r: dict, ref: dict) -> str:
    """Peak-memory growth against ``higher``'s; "–" when the reference grew by under 1 MiB (no ratio to speak of)."""
    return "–" if ref["peak_mib"] < 1.0 else f"{r['peak_mib'] / ref['peak_mib']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="tiny,mid")
    p.add_argument("--orders", default="second_order,first_order")
    p.add_argument("--backends", default="higher,torchfunc,learn2learn")
    p.add_argument("--iters", type=int, default=6, help="meta-iterations timed per run (median)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per backend (best counts)")
    p.add_argument("--floor", action="store_true", help="also time the bare ops (no prox, no backend)")
    p.add_argument("--profile", nargs=3, metavar=("CONFIG", "ORDER", "BACKEND"), help="op-category breakdown only")
    p.add_argument("--worker", nargs=4, metavar=("CONFIG", "ORDER", "BACKEND", "ITERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.profile:
        profile(*args.profile)
        return
    if args.worker:
        config, order, backend, iters = args.worker
        worker(config, order, backend, int(iters))
        return
    from l2sparse.meta import importable

    backends = [b for b in args.backends.split(",") if importable(b)]
    skipped = [b for b in args.backends.split(",") if b not in backends]
    if skipped:
        print(f"not importable here, skipped: {', '.join(skipped)}")
    runs = [*backends, "floor"] if args.floor else backends
    results = {}
    for config in args.configs.split(","):
        for order in args.orders.split(","):
            for _ in range(args.rounds):
                for b in runs:
                    cmd = [sys.executable, __file__, "--worker", config, order, b, str(args.iters)]
                    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    key = (config, order, b)
                    best = results.get(key)
                    results[key] = (
                        out if best is None or out["ms"] < best["ms"] else {**best, "peak_mib": out["peak_mib"]}
                    )
    print(f"{'config':<6} {'order':<13} {'backend':<11} {'ms/iter':>8} {'peak MiB':>9} {'time/higher':>11} "
          f"{'mem/higher':>10} {'dL/dρ':>12} {'|dL/dθ|':>10}")  # fmt: skip
    for (config, order, b), r in results.items():
        ref = results[(config, order, "higher")] if "higher" in backends else r
        print(
            f"{config:<6} {order:<13} {b:<11} {r['ms']:>8.1f} {r['peak_mib']:>9.1f} {r['ms'] / ref['ms']:>11.2f} "
            f"{mem_ratio(r, ref):>10} {r['d_rho']:>12.5e} {r['grad_norm']:>10.4f}"
        )
        agree = abs(r["d_rho"] - ref["d_rho"]) <= 1e-4 * max(1.0, abs(ref["d_rho"]))
        if not agree and b != "floor":
            print(f"  hypergradients differ from higher's: {r['d_rho']} vs {ref['d_rho']}")
    for config in args.configs.split(","):
        for b in backends:
            so, fo = results.get((config, "second_order", b)), results.get((config, "first_order", b))
            if so and fo:
                print(f"{config}: {b} first-order is {so['ms'] / fo['ms']:.2f}x faster than second-order")
    if args.floor and "higher" in backends:
        for (config, order, b), r in results.items():
            if b == "floor":
                share = r["ms"] / results[(config, order, "higher")]["ms"]
                print(
                    f"{config} {order}: the bare ops take {share:.2f}x higher's time: at most {1 / share:.2f}x to gain"
                )


if __name__ == "__main__":
    main()
