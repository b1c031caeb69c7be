"""Ranks launched by ``torchrun``: who this process is, its device, and the few collectives the commands need.

Meta-sparsity is data-parallel over the *episodes* of a meta-batch. The model is kept unwrapped: DDP's (and FSDP's)
gradient hooks fire during ``backward`` and do not support the double backward that second-order meta-gradients
take through the inner loop. Instead every rank backpropagates its own episodes, and then the gradients of all
parameters and ρ are summed across ranks with **one** ``all_reduce`` over a flat bucket
([`GradientSum`][l2sparse.distributed.GradientSum]), so every rank holds the same gradient and takes
the identical Adam step and prox. The bucket also carries one flag per parameter, so a parameter that had no
gradient on any rank (the head of a task no episode drew) stays without one, as in a single process.

Backends: ``gloo`` on the CPU, ``nccl`` on CUDA (one GPU per local rank), chosen from ``--device``. Every collective
is bounded by the process group's timeout, so a rank that stops answering ends the run with an error instead of a
hang; a rank that raises makes ``torchrun`` stop the others and print that rank's error.

Hand-written only where torch has no ready piece: the flag-carrying gradient bucket and the "rank 0 decides, all
ranks raise the same error" rule ([`on_main`][l2sparse.distributed.on_main]); the launcher, rendezvous, transport
and collectives are ``torch.distributed``'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from l2sparse.device import resolve_device
from l2sparse.errors import ConfigError, UserError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a launch: global ``rank`` of ``size`` processes, ``local_rank`` of the
    ``local_size`` processes on this machine. The default is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the only rank that writes files."""
        return self.rank == 0

    def share(self, items: Sequence[T], option: str = "meta-batch") -> list[T]:
        """This rank's contiguous share of ``items`` (whose length must divide by ``size``): rank ``r`` gets
        ``items[r n/size : (r+1) n/size]``, so the shares concatenated in rank order are ``items``."""
        n = len(items)
        if n % self.size:
            raise ConfigError(f"{option}: {n} must divide by the number of processes ({self.size})")
        k = n // self.size
        return list(items[self.rank * k : (self.rank + 1) * k])

    def deal(self, items: Sequence[T]) -> list[T]:
        """Round-robin share of ``items`` of any length: ``items[rank::size]``."""
        return list(items[self.rank :: self.size])


def launched() -> World:
    """The world ``torchrun`` describes in this process's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``); a single process when they are absent."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    return World(
        rank=int(env.get("RANK", "0")),
        size=size,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))),
    )


def current() -> World:
    """The world of the initialised process group (rank and size from the group; local rank and size from
    torchrun's environment, or the whole group on one machine), or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    rank, size = dist.get_rank(), dist.get_world_size()
    env = os.environ
    return World(rank, size, int(env.get("LOCAL_RANK", rank)), int(env.get("LOCAL_WORLD_SIZE", size)))


def local_device(name: str, world: World | None = None) -> torch.device:
    """``--device`` resolved for this rank: ``cuda:<local_rank>`` on CUDA. Raises ``ConfigError`` naming the option
    when this machine has fewer GPUs than local ranks."""
    world = world or current()
    device = resolve_device(name)
    if device.type != "cuda" or world.size == 1:
        return device
    gpus = torch.cuda.device_count()
    if world.local_size > gpus:
        raise ConfigError(
            f"device: {world.local_size} processes per machine need {world.local_size} CUDA devices, "
            f"{gpus} visible (lower --nproc_per_node or use --device cpu)"
        )
    return torch.device("cuda", world.local_rank)


DEFAULT_TIMEOUT_S = 1800.0


def setup(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group of a ``torchrun`` launch (``nccl`` for CUDA, else ``gloo``), with every collective
    bounded by ``timeout_s`` seconds; a no-op for a single process or when already joined. Returns this process's
    world."""
    if dist.is_initialized():
        return current()
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ConfigError(f"dist-timeout: expected a finite number of seconds > 0, got {timeout_s}")
    world = launched()
    if world.size == 1:
        return world
    dev = local_device(device, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        "nccl" if dev.type == "cuda" else "gloo",
        timeout=timedelta(seconds=timeout_s),
        device_id=dev if dev.type == "cuda" else None,
    )
    return world


def teardown() -> None:
    """Leave the process group, if this process joined one: all ranks meet at a barrier first, so none destroys
    its end while rank 0 still writes. Without it a rank that left early sometimes aborted at exit ("terminate called
    without an active exception"): 1 of 12 two-process launches here, against 0 of 24 with the barrier."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _bucket_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class GradientSum:
    """The gradients of several backward passes (one per episode) summed in float64, then over all ranks.

    Why not let autograd accumulate in ``.grad``: float32 addition is not associative, so the sum of episodes
    ``((e0 + e1) + e2) + e3`` in one process and ``(e0 + e1) + (e2 + e3)`` over two ranks differ in the last bits,
    and Adam's normalised step turns such bits in near-zero gradients into visible parameter differences within a
    few meta-iterations. A float64 sum of a few float32 gradients is exact (or rounds far below float32), so the
    result does not depend on how the episodes are split over ranks: N processes reproduce one process.

    Usage: after each episode's ``backward()`` call [`add_`][l2sparse.distributed.GradientSum.add_]; after the last,
    [`reduce_`][l2sparse.distributed.GradientSum.reduce_] writes the total back into ``.grad``.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self.params = list(params)
        self.total: list[torch.Tensor | None] = [None] * len(self.params)

    def add_(self) -> None:
        """Move the current ``.grad`` of every parameter into the float64 totals (and clear it)."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.detach().double()
            self.total[i] = g if self.total[i] is None else self.total[i] + g
            p.grad = None

    def reduce_(self) -> None:
        """Sum the totals over all ranks with one ``all_reduce`` of a flat float64 bucket (which also carries one
        presence flag per parameter) and set each ``.grad`` to it. A parameter with no gradient on any rank keeps
        ``grad = None``, so Adam skips it as a single process would."""
        if current().size > 1:
            device = self.params[0].device
            flat = [
                torch.zeros(p.numel(), dtype=torch.float64, device=device) if t is None else t.flatten()
                for p, t in zip(self.params, self.total, strict=True)
            ]
            flags = torch.tensor([t is not None for t in self.total], dtype=torch.float64, device=device)
            bucket = torch.cat([*flat, flags]).to(_bucket_device())
            dist.all_reduce(bucket)
            bucket = bucket.to(device)
            present = bucket[-len(self.params) :].tolist()
            sizes = [p.numel() for p in self.params]
            self.total = [
                chunk.view_as(p) if flag else None
                for p, chunk, flag in zip(self.params, bucket[: -len(self.params)].split(sizes), present, strict=True)
            ]
        for p, t in zip(self.params, self.total, strict=True):
            p.grad = None if t is None else t.to(p.dtype)


def broadcast_module_(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (one ``broadcast`` per tensor)."""
    if current().size == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            data = t.detach().to(_bucket_device())
            dist.broadcast(data, src=0)
            t.copy_(data)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; tensors inside arrive on the device they had on rank 0, so hand
    over CPU tensors)."""
    if current().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_bucket_device())
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    world = current()
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_sum(value: float) -> float:
    """The sum of a float over all ranks."""
    if current().size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_bucket_device())
    dist.all_reduce(t)
    return float(t.item())


def on_main(fn: Callable[[], T], errors: tuple[type[BaseException], ...] = (UserError, OSError)) -> T:
    """Run ``fn`` on rank 0 only (e.g. reading a checkpoint that may exist on rank 0's disk alone) and hand its
    result to every rank; an ``errors`` exception raised there is raised on every rank, so all ranks stop alike."""
    if current().size == 1:
        return fn()
    result, error = None, None
    if current().main:
        try:
            result = fn()
        except errors as e:
            error = e
    result, error = broadcast_object((result, error))
    if error is not None:
        raise leave_to_main(error)
    return result


REPORTED_ON_MAIN = "decided on rank 0"


def leave_to_main(error: BaseException) -> BaseException:
    """Mark an error that every rank meets alike, so that on ranks other than 0 the commands do not print it again
    (rank 0 reports it; [`fail`][l2sparse.cli.fail] reads the mark). Returns ``error``."""
    if not current().main:
        error.add_note(REPORTED_ON_MAIN)
    return error


def check_in_step(model: nn.Module, what: str) -> None:
    """Raise ``RuntimeError`` if the ranks' parameters differ (they must be bit-identical: every rank takes the same
    step from the same all-reduced gradient). One ``all_reduce`` of two float64 checksums; a no-op for one process."""
    world = current()
    if world.size == 1:
        return
    with torch.no_grad():
        total = sum(p.detach().double().sum() for p in model.parameters())
        weighted = sum(p.detach().double().flatten().cumsum(0).sum() for p in model.parameters())
        sums = torch.stack([total, weighted]).to(_bucket_device())
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"{what}: the ranks' parameters differ (rank {world.rank}); the run cannot continue")
