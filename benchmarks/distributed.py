"""Meta-training over 1 and N processes at the same global meta-batch: time per meta-iteration, side by side.

    python benchmarks/distributed.py                          # tiny and mid configs, 1 and 2 processes, CPU
    python benchmarks/distributed.py --nproc 4 --device cuda  # on a machine with 4 GPUs

Every run is a real command launch (``python -m l2sparse.meta_train`` for one process, ``torchrun
--nproc_per_node N -m l2sparse.meta_train`` for N), and its time per meta-iteration is the report's training time
(start-up, data and process-group set-up excluded) over the meta-iterations. On the CPU the one-process run is
timed twice: with one OpenMP thread (what each of the N ranks gets from torchrun) and with N threads (the same
cores used by one process), so the ratio shows what spreading episodes buys over intra-op threads. Rounds alternate
between the runs and the best round counts. Every N-process run's final meta-init is compared with the
one-process run's (max |Δθ|), so a speed-up never hides a different result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CONFIGS = {
    # name: meta_train options
    "tiny": ["--model", "tiny", "--image-size", "32", "--support", "8", "--query", "8"],
    "mid": ["--model", "small", "--image-size", "64", "--support", "16", "--query", "16"],
}


def run(config: str, nproc: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    """One launch; returns ``{"s_per_iter", "model"}``."""
    opts = [*CONFIGS[config], "--meta-batch", str(args.meta_batch), "--meta-iters", str(args.iters)]
    opts += ["--train-size", "128", "--device", args.device, "--quiet", "--out", str(out)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "l2sparse.meta_train", *opts]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += ["-m", "l2sparse.meta_train", *opts]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    model = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    return {"s_per_iter": report["train_time_s"] / report["meta_iterations"], "model": model}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="tiny,mid")
    p.add_argument("--nproc", type=int, default=2, help="processes of the distributed runs (default: 2)")
    p.add_argument("--meta-batch", type=int, default=4, help="global meta-batch (default: 4)")
    p.add_argument("--iters", type=int, default=6, help="meta-iterations per run (default: 6)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the best counts (default: 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = p.parse_args()
    runs = [(1, 1), (args.nproc, 1)] if args.device == "cuda" else [(1, 1), (1, args.nproc), (args.nproc, 1)]
    print(f"global meta-batch {args.meta_batch}, {args.iters} meta-iterations, {args.device}, best of {args.rounds}")
    print("| config | processes × threads | s / meta-iteration | speed-up vs 1 × 1 | max abs Δθ vs 1 process |")
    print("|---|---|---|---|---|")
    for config in args.configs.split(","):
        best: dict[tuple[int, int], dict] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for nproc, threads in runs:
                    res = run(config, nproc, threads, args, Path(tmp) / f"{nproc}x{threads}-{r}")
                    if (nproc, threads) not in best or res["s_per_iter"] < best[(nproc, threads)]["s_per_iter"]:
                        best[(nproc, threads)] = res
        ref = best[(1, 1)]
        for (nproc, threads), res in best.items():
            diff = max((res["model"][k].double() - ref["model"][k].double()).abs().max().item() for k in ref["model"])
            print(
                f"| {config} | {nproc} × {threads} | {res['s_per_iter']:.3f} | "
                f"{ref['s_per_iter'] / res['s_per_iter']:.2f}× | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
