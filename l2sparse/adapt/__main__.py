"""``python -m l2sparse.adapt``: see [`l2sparse.adapt.cli`][l2sparse.adapt.cli]."""

from torch.distributed.elastic.multiprocessing.errors import record

from l2sparse.adapt.cli import main

if __name__ == "__main__":
    record(main)()
