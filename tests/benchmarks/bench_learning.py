"""Does every method learn? Each one trained on the trained tiny LMM at a fixed budget, 3 seeds.

    python tests/benchmarks/bench_learning.py                       # every method, seeds 0 1 2
    python tests/benchmarks/bench_learning.py --methods lora prompt --seeds 0
    python tests/benchmarks/bench_learning.py --out outputs/bench_learning --epochs 6

Each run is ``python train.py experiment=learn_<method> seed=<s>`` in its own process (the
learning set: held-out photographs at held-out strengths in test), so wall time and peak memory
are the run's own (``metrics.json``: ``wall_time_s`` from the start of training to the end of
testing, ``peak_memory_mb`` the process's peak resident set on CPU). Zero-shot is the same
test images scored by the untrained module before training (``zeroshot/srcc``); RALI's row
compares with its teacher LMM's zero-shot (an untrained student has no meaningful one). RALI
distils from the LoRA run of the same seed (``teacher.run``), so ``lora`` runs first.

Prints one table: method, trainable parameters, wall time, peak memory, zero-shot SRCC, tuned
test SRCC and PLCC (mean and std over seeds), and gain (tuned minus zero-shot SRCC, mean); its
last line is ``learning: min gain <g> best srcc <s> zero-shot <z>`` (the worst method's gain,
the best method's SRCC, the highest zero-shot SRCC). Goals: every gain >= 0.15, best SRCC >=
0.85, zero-shot < 0.5. Not part of the test run (pytest ignores tests/benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: method name -> experiment; order matters (rali distils from the lora run).
METHODS = {
    "lora": "learn_lora",
    "prompt": "learn_prompt",
    "progressive": "learn_progressive",
    "perception": "learn_perception",
    "level_ce": "learn_level_ce",
    "soft_label": "learn_soft_label",
    "rali": "learn_rali",
}


def run(method: str, seed: int, out: Path, extra: list[str], lora_runs: dict) -> dict:
    """Train one method with one seed; returns its metrics.json."""
    folder = out / f"{method}_seed{seed}"
    args = [f"experiment={METHODS[method]}", f"seed={seed}", f"hydra.run.dir={folder}"]
    args += ["logger=csv", *extra]
    if method == "rali":
        args.append(f"teacher.run={lora_runs[seed]}")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{method} seed {seed} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["folder"] = str(folder)
    print(
        f"  {method:<15} seed {seed}: zero-shot {metrics.get('zeroshot/srcc')} "
        f"test srcc {metrics['test/srcc']:.4f} ({metrics['wall_time_s']:.0f} s)",
        flush=True,
    )
    return metrics


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def table(results: dict[str, list[dict]]) -> tuple[str, dict]:
    """The table's text and the figures of its last line."""
    header = (
        f"| {'method':<15} | params | wall s | peak MB | zero-shot | test SRCC     "
        f"| test PLCC     | gain   |"
    )
    lines = [header, "|" + "|".join("---" for _ in range(8)) + "|"]
    gains, bests, zeros = [], [], []
    for method, runs in results.items():
        srcc = mean_std([r["test/srcc"] for r in runs])
        plcc = mean_std([r["test/plcc"] for r in runs])
        zero = statistics.fmean(r["zeroshot/srcc"] for r in runs)
        gain = srcc[0] - zero
        gains.append(gain)
        bests.append(srcc[0])
        zeros.append(zero)
        lines.append(
            f"| {method:<15} | {runs[0]['trainable_parameters']:>6} "
            f"| {statistics.fmean(r['wall_time_s'] for r in runs):>6.0f} "
            f"| {statistics.fmean(r['peak_memory_mb'] for r in runs):>7.0f} "
            f"| {zero:>9.3f} | {srcc[0]:.3f} ± {srcc[1]:.3f} | {plcc[0]:.3f} ± {plcc[1]:.3f} "
            f"| {gain:+.3f} |"
        )
    last = {"min_gain": min(gains), "best_srcc": max(bests), "zero_shot": max(zeros)}
    return "\n".join(lines), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs for all")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_learning_"))
    extra = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    methods = list(args.methods)
    if "rali" in methods and "lora" not in methods:
        methods.insert(0, "lora")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    lora_runs: dict[int, str] = {}
    print(
        f"bench_learning: {len(methods)} methods x {len(args.seeds)} seeds into {out}", flush=True
    )
    for method in methods:
        for seed in args.seeds:
            metrics = run(method, seed, out, extra, lora_runs)
            if method == "lora":
                lora_runs[seed] = metrics["folder"]
            if method == "rali":  # the untrained student's figure says nothing: its teacher's
                teacher = results["lora"][args.seeds.index(seed)]
                metrics["zeroshot/srcc"] = teacher["zeroshot/srcc"]
            results[method].append(metrics)
    text, last = table(results)
    print(text)
    print(
        f"learning: min gain {last['min_gain']:.3f} best srcc {last['best_srcc']:.3f} "
        f"zero-shot {last['zero_shot']:.3f}"
    )


if __name__ == "__main__":
    main()
