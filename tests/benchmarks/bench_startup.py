"""Start-up to the first training step: ``python train.py experiment=smoke`` against a plain
PyTorch script that reaches the same point (imports torch and transformers, builds the same tiny
LLaVA, reads one batch of the same images, runs one forward and backward).

    python tests/benchmarks/bench_startup.py
    python tests/benchmarks/bench_startup.py --rounds 7
    python tests/benchmarks/bench_startup.py --smoke      # one round each: does it still run?

Each process prints ``FIRST_STEP <unix time>`` when its first step starts (train.py through a
callback added with ``+callbacks.first_step=...``, which then ends the process) and is timed
from its launch. Rounds alternate train.py / plain; medians are compared. Both use the same
dataset cache, generated before the first round. Goal: train.py / plain <= 1.3. A third row
times ``import lightning`` alone: the part of the gap that is Lightning's own import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MARK = "FIRST_STEP"

PLAIN = r"""
import sys, time
from pathlib import Path
import torch
from PIL import Image
from iqa_lightning.models.backbones import build_tiny_llava

images = sorted(Path(sys.argv[1]).rglob("*.png"))[:16]
pixels = torch.stack([
    torch.from_numpy(__import__("numpy").asarray(Image.open(p).convert("RGB").resize((64, 64))))
    .permute(2, 0, 1).float() / 255 for p in images
])
backbone = build_tiny_llava()
prompt = torch.zeros(1, 3, 64, 64, requires_grad=True)
print("FIRST_STEP", time.time(), flush=True)
"""


IMPORT_LIGHTNING = "import time, lightning; print('FIRST_STEP', time.time(), flush=True)"


class FirstStepMark:
    """Lightning callback: print the mark at the first training batch and end the process."""

    def __new__(cls):
        import lightning as L

        class _Mark(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                print(MARK, time.time(), flush=True)
                os._exit(0)

        return _Mark()


def timed(command: list[str], env: dict) -> float:
    """Seconds from launching ``command`` to its ``FIRST_STEP`` line."""
    started = time.time()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return float(line.split()[1]) - started
    raise RuntimeError(
        f"{' '.join(command[:3])} ... ended (exit code {proc.returncode}) before its first "
        f"step:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="train.py and the plain script once each (timings not comparable)",
    )
    args = parser.parse_args(argv)
    rounds = 1 if args.smoke else args.rounds

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    env = {
        **os.environ, "IQA_ROOT": str(work), "IQA_CACHE_DIR": str(work / "cache"),
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    train = [
        sys.executable, "train.py", "experiment=smoke", "dataset.n_refs=4",
        "dataset.generated_size=96", "+callbacks.first_step._target_=bench_startup.FirstStepMark",
    ]  # fmt: skip
    if not args.smoke:
        timed(train, env)  # generates the dataset into the cache; not counted
    data = work / "cache"
    commands = {
        "train.py": train,
        "plain": [sys.executable, "-c", PLAIN, str(data)],
        # What Lightning's import alone costs (torchmetrics, scipy.signal, fsspec, ...).
        "import lightning": [sys.executable, "-c", IMPORT_LIGHTNING],
    }
    if args.smoke:  # train.py once (its run generates the data as well): does the mark come?
        del commands["import lightning"], commands["plain"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(timed(command, env))
    shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    if "plain" not in medians:
        print(f"train.py to its first step: {medians['train.py']:.2f} s (smoke: one run)")
        return medians
    ratio = medians["train.py"] / medians["plain"]
    for name, values in times.items():
        print(f"{name:16s} median {medians[name]:.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"start-up to first step: train.py / plain = {ratio:.2f}x (goal <= 1.3x)")
    return {**medians, "ratio": ratio}


if __name__ == "__main__":
    main()
