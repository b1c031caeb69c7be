"""Fixed-λ multi-task training with group sparsity (the "Less is More" baseline).

``python -m l2sparse.train --dataset synthetic --lam 1e-3 --steps 300 --out runs/x``

The shared backbone's channel groups are shrunk by the group prox after every optimiser step (``ProxAdam`` or
``ProxSGD``); heads are not penalised. At the end the model is evaluated on the held-out split, compacted, and
``report.json`` is written next to an atomic ``checkpoint.pt`` (``--resume`` continues an interrupted run on the
same trajectory).
"""

from l2sparse.train.cli import build_parser, main
from l2sparse.train.config import OPTIMIZERS, TrainConfig
from l2sparse.train.trainer import Trained, TrainReport, train, train_or_reuse

__all__ = ["OPTIMIZERS", "TrainConfig", "TrainReport", "Trained", "build_parser", "main", "train", "train_or_reuse"]
