"""``python -m l2sparse.tasks list [--tasks-dir DIR] [--dataset NAME]``: print tasks and splits."""

from __future__ import annotations

from collections.abc import Sequence

from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError
from l2sparse.tasks.registry import load_registry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m l2sparse.tasks", description="List the registered tasks and splits.")
    p.add_argument("command", choices=["list"], help="what to do")
    p.add_argument("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    p.add_argument("--dataset", default=None, help="only this dataset's tasks and splits")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        reg = load_registry(args.tasks_dir)
    except UserError as e:
        fail(p.prog, str(e))
    datasets = [args.dataset] if args.dataset else sorted(reg.tasks)
    if args.dataset and args.dataset not in reg.tasks:
        fail(p.prog, f"no tasks for dataset {args.dataset!r}; datasets with tasks: {', '.join(sorted(reg.tasks))}")
    rows = [
        (ds, t.name, f"{t.head}/{t.out_channels}", t.loss, t.metrics, t.description)
        for ds in datasets
        for t in reg.tasks[ds].values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print("tasks")
    for row in rows:
        print("  " + " ".join([*(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)), row[5]]))
    print("splits")
    for s in sorted(reg.splits.values(), key=lambda s: s.name):
        if args.dataset in (None, s.dataset):
            print(f"  {s.name:<20} {s.dataset:<10} seen: {', '.join(s.seen)} | unseen: {', '.join(s.unseen)}")


if __name__ == "__main__":
    main()
