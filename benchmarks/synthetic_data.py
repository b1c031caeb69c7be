"""Throughput of the built-in synthetic scene renderer (target: ≥ 500 images/s at 64x64 on 2 cores).

    python benchmarks/synthetic_data.py --images 2000 --image-size 64 --workers 0,2

Renders fresh images (nothing cached) directly and through a ``DataLoader`` with worker processes.
"""

from __future__ import annotations

import argparse
import time

from torch.utils.data import DataLoader

from l2sparse.data.synthetic import SyntheticScenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", default="0,2", help="DataLoader worker counts to time")
    args = p.parse_args()
    SyntheticScenes(size=1, image_size=args.image_size)[0]  # warm-up: imports, ray grid
    print(f"{'workers':>7} {'images/s':>9}")
    for workers in (int(w) for w in args.workers.split(",")):
        ds = SyntheticScenes("train", size=args.images, image_size=args.image_size, seed=workers + 1)
        loader = DataLoader(ds, batch_size=64, num_workers=workers)
        start = time.perf_counter()
        n = sum(len(batch["image"]) for batch in loader)
        rate = n / (time.perf_counter() - start)
        print(f"{workers:>7} {rate:>9.0f}")


if __name__ == "__main__":
    main()
