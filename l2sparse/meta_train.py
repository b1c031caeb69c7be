"""Meta-sparsity training: ``python -m l2sparse.meta_train --dataset synthetic --split synthetic-default
--backend torchfunc --inner-steps 3 --meta-iters 200 --out runs/meta``.

Writes ``checkpoint.pt`` (atomic, ``--resume`` continues), ``report.json`` (sparsity, parameters, MACs, λ
trajectory, query losses) and ``meta_trajectory.png`` (λ and group sparsity over meta-iterations).

``torchrun --nproc_per_node N -m l2sparse.meta_train ...`` spreads each meta-batch's episodes over N processes
(``--meta-batch`` stays the global meta-batch and must divide by N); rank 0 alone writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from l2sparse import distributed, options
from l2sparse.checkpoint import save_json
from l2sparse.cli import ArgumentParser, run_launched
from l2sparse.meta.config import MetaConfig
from l2sparse.meta.metasparsity import MetaSparsity
from l2sparse.meta.report import plot_trajectory, report


def build_parser() -> ArgumentParser:
    description = __doc__.split("\n\n")[0]
    return options.parser_for(MetaConfig, "python -m l2sparse.meta_train", description, resume=True, launched=True)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    cfg, args = options.parse(parser, MetaConfig, argv)

    def work() -> MetaSparsity:
        trainer = MetaSparsity(cfg, args.out, resume=args.resume)
        trainer.train(progress=not args.quiet)
        return trainer

    trainer, main_rank = run_launched(parser.prog, cfg, args.dist_timeout, work)
    if not main_rank:
        distributed.teardown()
        return {}
    out = Path(args.out)
    rep = report(trainer)
    plot_trajectory(trainer.log, [g.layer for g in trainer.groups], out / "meta_trajectory.png")
    save_json(rep, out / "report.json")
    print(
        f"λ {cfg.lam_init:.3g} -> {rep['lambda_final']}, group sparsity {rep['sparsity']['group']:.3f}, "
        f"params {rep['params']['dense']} -> {rep['params']['compact']}"
    )
    print(f"report: {out / 'report.json'}, plot: {out / 'meta_trajectory.png'}")
    distributed.teardown()
    return rep


if __name__ == "__main__":
    record(main)()
