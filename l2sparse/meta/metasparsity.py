"""The meta-sparsity trainer: learn the shared initialisation and the group-sparsity strength λ together.

One meta-iteration (DESIGN §1):

1. sample a meta-batch of episodes over the split's seen tasks (task subset, support and disjoint query images);
2. per episode, a differentiable proximal inner loop from the meta-init (any backend);
3. outer loss = mean query loss; backprop to the meta-init and ρ (λ = exp(ρ)); with ``init_horizon``, ρ's gradient
   also gets the term through the meta-init's own prox ([`InitTangent`][l2sparse.meta.init_tangent.InitTangent]);
4. Adam step on the meta-init and ρ, then the exact group prox in Adam's metric on the meta-init's backbone with
   the new λ ([`adam_prox_`][l2sparse.sparsity.metric_prox.adam_prox_]), so the meta-init itself carries the
   learned sparsity and a group dies when its own norm and gradients say so;
5. with a budget ([`Budget`][l2sparse.meta.budget.Budget]), ``λ_eff = exp(ρ + ν)`` everywhere λ acts, with ``ν``
   solved after each outer step so that the meta-init's prox leaves exactly the scheduled size.
   BatchNorm running statistics of the meta-init are then refreshed from the query images.

Checkpoints are atomic and hold model, ρ, optimiser, sampler state and the log, so ``resume`` continues on exactly
the trajectory of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from l2sparse import distributed
from l2sparse.checkpoint import save_checkpoint
from l2sparse.data import make_dataset
from l2sparse.data.episodes import EpisodeSampler
from l2sparse.errors import BlowUpError, CheckpointError
from l2sparse.guards import check_finite, check_finite_model
from l2sparse.meta.backends import InnerLoop, get_backend
from l2sparse.meta.config import MetaConfig
from l2sparse.meta.init_tangent import InitTangent
from l2sparse.meta.inner import InnerConfig
from l2sparse.models import create_model
from l2sparse.runs import RunFolder
from l2sparse.sparsity import ConvGroups, adam_prox_, channel_groups, filter_norms, keep_filter_norms_, sparsity_report
from l2sparse.sparsity.metric_prox import adam_prox_terms
from l2sparse.tasks import Task, task_files_digest

RESUMABLE_CHANGES = ("meta_iters", "ckpt_every", "device")
BLOW_UP_FIX = "lower the learning rates (meta_train's --inner-lr, --outer-lr, --lam-lr) or check the task losses"


def meta_update(
    model: torch.nn.Module,
    groups: Sequence[ConvGroups],
    rho: Tensor,
    backend: InnerLoop,
    episodes: Sequence[dict],
    tasks: Sequence[Task],
    inner: InnerConfig,
    opt: torch.optim.Optimizer,
    nu: float = 0.0,
    solve_nu: Callable[[], float] | None = None,
    filter_norms: dict | None = None,
    inner_scale: Tensor | None = None,
    tangent: InitTangent | None = None,
) -> dict:
    """One outer step on a meta-batch: the mean query loss over episodes (each the mean over its tasks) with
    ``λ = exp(rho + nu)`` in the inner loops (times ``inner_scale``, a constant ``(num_layers,)`` per-layer factor,
    when given); an ``opt`` (Adam) step on the meta-init and ``rho``; then the exact
    group prox of the meta-init in Adam's metric with ``λ = exp(rho + ν)``, where ``ν`` is ``solve_nu()`` after
    the step (a budget's multiplier) or ``nu``; then, with ``filter_norms``, every output filter of a normalised
    conv is scaled back to its norm there ([`keep_filter_norms_`][l2sparse.sparsity.filter_norms.keep_filter_norms_]).
    With ``tangent``, ρ's gradient also gets the term through the meta-init's own prox,
    [`InitTangent.lambda_grad`][l2sparse.meta.init_tangent.InitTangent.lambda_grad], and the prox updates the
    tangent.

    Each episode is backpropagated on its own (the graph of one inner loop at a time is alive). Under ``torchrun``
    every rank takes its share of ``episodes`` (the whole meta-batch, identical on every rank) and the gradients are
    summed in float64 and across ranks ([`GradientSum`][l2sparse.distributed.GradientSum]) before the identical
    step.

    Returns ``{"lambda", "nu", "outer_loss", "query_loss": {task: mean over episodes}}``.
    """
    by_name = {t.name: t for t in tasks}
    opt.zero_grad(set_to_none=True)
    mine: dict[str, list[float]] = {}
    outer = 0.0
    grads = distributed.GradientSum(p for group in opt.param_groups for p in group["params"])
    for ep in distributed.current().share(episodes):
        lam = (rho + nu).exp()
        inner_lam = lam if inner_scale is None else lam * inner_scale
        losses = backend.query_losses(model, groups, inner_lam, ep, [by_name[n] for n in ep["tasks"]], inner)
        loss = sum(losses.values()) / len(losses) / len(episodes)
        loss.backward()
        grads.add_()
        outer += loss.item()
        for n, v in losses.items():
            mine.setdefault(n, []).append(v.item())
    grads.reduce_()
    if tangent is not None and rho.requires_grad:
        through_init = tangent.lambda_grad(model, rho.shape).to(rho)
        rho.grad = through_init if rho.grad is None else rho.grad + through_init
    outer = distributed.all_sum(outer)
    per_task: dict[str, list[float]] = {}
    for share in distributed.all_gather_objects(mine):  # rank order = episode order
        for n, v in share.items():
            per_task.setdefault(n, []).extend(v)
    opt.step()
    if solve_nu is not None:
        nu = solve_nu()
    lam = (rho.detach() + nu).exp()
    if tangent is not None:
        tangent.prox_(model, groups, lam, opt, filter_norms)
    else:
        adam_prox_(model, groups, lam, opt)
        if filter_norms is not None:
            keep_filter_norms_(model, filter_norms)
    return {
        "lambda": lam.tolist(),
        "nu": nu,
        "outer_loss": outer,
        "query_loss": {n: sum(v) / len(v) for n, v in per_task.items()},
    }


class MetaSparsity:
    """Meta-train a multi-task model's init and λ on a split's seen tasks.

    Example:
        ```python
        trainer = MetaSparsity(MetaConfig(meta_iters=50), out="runs/meta")
        trainer.train()
        trainer.lam, trainer.log[-1]["group_sparsity"]  # λ and the meta-init's group sparsity
        ```
    """

    def __init__(self, cfg: MetaConfig, out: str | Path, resume: bool = False) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.tasks = cfg.validate()
        self.task_files = task_files_digest(cfg.tasks_dir)
        self.world = distributed.setup(cfg.device)  # joins a torchrun launch's process group unless already in it
        self.ckpt_path = self.out / "checkpoint.pt"
        state = distributed.on_main(lambda: self._saved_state(resume))  # rank 0 reads, every rank gets it
        self.device = distributed.local_device(cfg.device)
        self.backend = get_backend(cfg.backend)

        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model, self.tasks).to(self.device)
        self.groups = channel_groups(self.model, "backbone", cfg.group_mode)
        n_rho = len(self.groups) if cfg.per_layer else 1
        rho0 = torch.full((n_rho,), float(torch.tensor(cfg.lam_init).log()), device=self.device)
        self.rho = (rho0 if cfg.per_layer else rho0[0]).clone().requires_grad_(cfg.learn_lambda)
        groups_of_params = [{"params": self.model.parameters(), "lr": cfg.outer_lr}]
        if cfg.learn_lambda:
            groups_of_params.append({"params": [self.rho], "lr": cfg.lam_lr})
        self.opt = torch.optim.Adam(groups_of_params)
        targets = {t.target for t in self.tasks}
        data = make_dataset(cfg.dataset, "train", cfg.data_root, cfg.image_size, cfg.train_size, cfg.seed, targets)
        self.data = {k: v.to(self.device) for k, v in data.tensors().items() if k == "image" or k in targets}
        subset = "all" if cfg.subset == "all" else int(cfg.subset)
        self.sampler = EpisodeSampler(self.data, self.tasks, cfg.support, cfg.query, subset, cfg.meta_batch, cfg.seed)
        self.iteration, self.log, self.elapsed = 0, [], 0.0
        self.budget = cfg.make_budget()
        self.nu = 0.0  # the budget's log multiplier of λ (0 without a budget)
        distributed.broadcast_module_(self.model)  # every rank starts from rank 0's meta-init
        self.filter_norms = filter_norms(self.model, self.groups) if cfg.keep_norms else None
        self.tangent = (
            InitTangent(self.model, self.groups, cfg.init_horizon) if cfg.init_horizon and cfg.learn_lambda else None
        )
        if state is not None:
            try:
                self._restore(state)
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(
                    f"{self.ckpt_path}: its contents do not fit model {cfg.model!r} and this run "
                    f"({type(e).__name__}: {e})"
                ) from e

    def _restore(self, state: dict) -> None:
        """Load a checkpoint's model, optimiser, ρ, sampler, log and budget state into this trainer."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.rho.copy_(state["rho"])
        self.sampler.load_state_dict(state["sampler"])
        self.iteration, self.log = int(state["iteration"]), list(state["log"])
        self.elapsed, self.nu = float(state["elapsed_s"]), float(state["budget_nu"])
        if self.budget is not None:  # the schedule of the original run, even if --meta-iters grew
            self.budget.ramp = int(state["budget_ramp"])
        if self.filter_norms is not None:
            self.filter_norms = {k: v.to(self.device) for k, v in state["filter_norms"].items()}
        if self.tangent is not None:
            self.tangent.load_state_dict(state["init_tangent"])

    def _saved_state(self, resume: bool) -> dict | None:
        """The checkpoint to resume from (checked against the config and the task files), or None for a fresh run."""
        keys = ("model", "rho", "optimizer", "sampler", "iteration")
        return RunFolder(self.out).start(resume, asdict(self.cfg), keys, RESUMABLE_CHANGES, self.task_files)

    @property
    def lam(self) -> Tensor:
        """The effective λ = exp(ρ + ν) that the inner loops and the meta-init's prox use."""
        return (self.rho + self.nu).exp()

    def inner_scale(self) -> Tensor:
        """Each layer's gradient scale ``s_l`` ``(num_layers,)`` from the meta-init's Adam state, the factor that
        ``--inner-threshold relative`` puts on λ in the inner loop so that λ means there what it means in the
        meta-init's prox (ones before the first Adam step, when there is no state yet). A constant: no gradient."""
        if not self.opt.state:
            return torch.ones(len(self.groups), dtype=self.rho.dtype, device=self.device)
        _, scales = adam_prox_terms(self.opt, dict(self.model.named_parameters()), self.groups)
        return scales.to(self.rho.dtype).to(self.device)

    def meta_step(self) -> dict:
        """One meta-iteration; returns its log entry (λ, outer loss, query loss per task, group sparsity)."""
        cfg = self.cfg
        episodes = self.sampler.sample()
        entry = meta_update(
            self.model,
            self.groups,
            self.rho,
            self.backend,
            episodes,
            self.tasks,
            cfg.inner(),
            self.opt,
            self.nu,
            None
            if self.budget is None
            else lambda: self.budget.solve_nu(
                self.model, self.groups, self.rho, self.opt, self.iteration + 1, cfg.image_size
            ),
            self.filter_norms,
            self.inner_scale() if cfg.inner_threshold == "relative" else None,
            self.tangent,
        )
        self.nu = entry["nu"]
        with torch.no_grad():
            self.model.train()
            self.model(torch.cat([ep["test"]["image"] for ep in episodes]), tasks=[t.name for t in self.tasks])
        self.iteration += 1
        report = sparsity_report(self.model, self.groups)
        entry = {
            "iteration": self.iteration,
            **entry,
            "group_sparsity": report["group"],
            "layer_sparsity": [v["group_sparsity"] for v in report["per_layer"].values()],
        }
        if self.budget is not None:
            entry["budget_measured"] = self.budget.measure(self.model, self.groups, cfg.image_size)
            entry["budget_target"] = self.budget.target_at(self.iteration)
        return entry

    def checkpoint(self, started: float) -> None:
        """Write the run's state atomically (rank 0 only; the other ranks hold the same state)."""
        check_finite_model("meta_train", self.iteration, self.model, BLOW_UP_FIX, self.ckpt_path, "meta-iteration")
        distributed.check_in_step(self.model, f"meta_train at meta-iteration {self.iteration}")
        if not self.world.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)  # created at the first checkpoint: an early error leaves nothing
        save_checkpoint(
            {
                "config": asdict(self.cfg),
                "task_files": self.task_files,
                "model": self.model.state_dict(),
                "rho": self.rho.detach().cpu(),
                "optimizer": self.opt.state_dict(),
                "sampler": self.sampler.state_dict(),
                "iteration": self.iteration,
                "log": self.log,
                "elapsed_s": self.elapsed + time.perf_counter() - started,
                "tasks": [t.name for t in self.tasks],
                "budget_nu": self.nu,
                "budget_ramp": None if self.budget is None else self.budget.ramp,
                "filter_norms": self.filter_norms,
                "init_tangent": None if self.tangent is None else self.tangent.state_dict(),
            },
            self.ckpt_path,
        )

    def train(self, progress: bool = True, on_iteration: Callable[[dict], None] | None = None) -> None:
        """Run meta-iterations until ``meta_iters``, checkpointing every ``ckpt_every`` and at the end."""
        started = time.perf_counter()
        bar = tqdm(
            total=self.cfg.meta_iters, initial=self.iteration, desc="meta", disable=not progress or not self.world.main
        )
        while self.iteration < self.cfg.meta_iters:
            entry = self.meta_step()
            values = {"outer loss": entry["outer_loss"], "λ": torch.tensor(entry["lambda"])}
            try:
                check_finite("meta_train", self.iteration, values, BLOW_UP_FIX, self.ckpt_path, "meta-iteration")
            except BlowUpError as e:  # every rank holds the same values: rank 0 reports it
                distributed.leave_to_main(e)
                raise
            self.log.append(entry)
            if on_iteration is not None:
                on_iteration(entry)
            bar.update(1)
            lam = entry["lambda"] if isinstance(entry["lambda"], float) else max(entry["lambda"])
            bar.set_postfix(
                lam=f"{lam:.2e}", loss=f"{entry['outer_loss']:.3f}", sparsity=f"{entry['group_sparsity']:.2f}"
            )
            if self.iteration % self.cfg.ckpt_every == 0 or self.iteration == self.cfg.meta_iters:
                self.checkpoint(started)
        bar.close()
        self.elapsed += time.perf_counter() - started
