"""Framework overhead: one training step of the IQAModule through a real Lightning Trainer
against a bare PyTorch loop doing the same forward, backward and optimiser step.

    python tests/benchmarks/bench_overhead.py
    python tests/benchmarks/bench_overhead.py --steps 60 --rounds 7 --batch 8
    python tests/benchmarks/bench_overhead.py --smoke      # one tiny round: does it still run?

Same process, same module, same fixed batch (a loader that yields it ``--steps`` times), one
thread count. The Lightning step is timed from one ``on_train_batch_start`` to the next (so it
holds the whole loop: fetch, the module's ``training_step`` with its two ``self.log`` calls,
``zero_grad``, ``backward``, ``optimizer.step``, callbacks); the first ``--warmup`` steps of
each fit are left out. Rounds alternate Lightning / bare; medians per step are compared.
Two model sizes show how the fixed per-step overhead shrinks against the model's own work.

Goal: Lightning / bare <= 1.05. Not part of the test run (pytest ignores tests/benchmarks);
``--smoke`` is, in tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from _common import SIZES, fixed_batch, summary, tiny_module
from torch.utils.data import DataLoader


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def lightning_step(module, batch, steps: int, warmup: int) -> float:
    """Seconds per steady-state step of ``trainer.fit``."""
    loader = DataLoader([batch] * (steps + warmup), batch_size=None)
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    times = clock.starts[warmup:] + [clock.end]
    return (times[-1] - times[0]) / (len(times) - 1)


def bare_step(module, batch, steps: int, warmup: int) -> float:
    """Seconds per step of a plain loop: forward, loss, zero_grad, backward, step."""
    module.train()
    optimizer = module.configure_optimizers()
    pixels, target = batch["pixels"], batch["target"].float()
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(module(pixels), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--smoke", action="store_true",
                        help="one round of 2 steps at batch 2 on the tiny model (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = dict(SIZES)
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.batch = 2, 1, 1, 2
        sizes = dict(list(SIZES.items())[:1])
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} "
          f"threads, batch {args.batch}, {args.steps} steps x {args.rounds} rounds")  # fmt: skip
    print(f"{'model':32s} {'bare ms/step':>13s} {'Lightning ms/step':>18s} {'ratio':>7s}")
    ratios = {}
    for name, size in sizes.items():
        module = tiny_module(**size)
        batch = fixed_batch(args.batch, module.backbone.image_size)
        lit, bare = [], []
        for _ in range(args.rounds):
            lit.append(lightning_step(module, batch, args.steps, args.warmup))
            bare.append(bare_step(module, batch, args.steps, args.warmup))
        (lit_med, _), (bare_med, _) = summary(lit), summary(bare)
        ratios[name] = lit_med / bare_med
        print(f"{name:32s} {bare_med * 1e3:13.2f} {lit_med * 1e3:18.2f} {ratios[name]:7.3f}")
    return ratios


if __name__ == "__main__":
    main()
