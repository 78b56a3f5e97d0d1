"""Does every method learn? Each one trained on the trained tiny LMM at a fixed budget, 3 seeds.

    python tests/benchmarks/bench_learning.py                       # every method, seeds 0 1 2
    python tests/benchmarks/bench_learning.py --methods lora prompt --seeds 0
    python tests/benchmarks/bench_learning.py --out outputs/bench_learning --epochs 6
    python tests/benchmarks/bench_learning.py --pretrained /tmp/t/tiny_llava   # another model
    python tests/benchmarks/bench_learning.py --smoke     # one step of one method: still runs?

Each run is ``python train.py experiment=learn_<method> seed=<s>`` in its own process (the
learning set: held-out photographs at held-out strengths in test), so wall time and peak memory
are the run's own (``metrics.json``: ``wall_time_s`` from the start of training to the end of
testing, ``peak_memory_mb`` the process's peak resident set on CPU). Zero-shot is the same
test images scored by the untrained module before training (``zeroshot/srcc``); RALI's row
compares with its teacher LMM's zero-shot (an untrained student has no meaningful one). RALI
distils from the LoRA run of the same seed (``teacher.run``), so ``lora`` runs first. GRPO's
zero-shot is the starting model's answers parsed; its runs also print the mean reward of the
first and the last epoch's steps (``grpo_rewards.csv``).

Prints one table: method, trainable parameters, wall time, peak memory, zero-shot SRCC, tuned
test SRCC and PLCC (mean and std over seeds), and gain (tuned minus zero-shot SRCC, mean); its
last line is ``learning: min gain <g> best srcc <s> zero-shot <z>`` (the worst method's gain,
the best method's SRCC, the highest zero-shot SRCC). Goals: every gain >= 0.15, best SRCC >=
0.85, zero-shot < 0.5. Under it, a line that is not a method: the classical reference
(:mod:`iqa_lightning.tiny.nss`, natural scene statistics and a small MLP, trained on the same
training images, chosen on validation, same seeds): what the pixels' own statistics give on
this set. Then the test SRCC per held-out photograph (each method's mean over seeds, and the
reference's): where on the test split a method ranks well and where not. Not part of the test
run (pytest ignores tests/benchmarks).

``--smoke`` checks that the benchmark still runs, in seconds: seed 0 of ``prompt`` (or the
``--methods`` given), one training step, one validation and one test batch on a learning set of
16 / 8 / 8 images, trained in this process (``tests/training.py``; wall time and memory are
then not the run's own) with the same experiment and overrides the real runs get
(tests/test_benchmarks_smoke.py runs it).
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

from iqa_lightning.tiny.trained import LMM_FOLDER, trained_folder

REPO = Path(__file__).resolve().parents[2]

#: method name -> experiment (and the overrides that make it); order matters (rali distils
#: from the lora run).
METHODS = {
    "lora": "learn_lora",
    "prompt": "learn_prompt",
    "progressive": "learn_progressive",
    "perception": "learn_perception",
    "level_ce": "learn_level_ce",
    "soft_label": "learn_soft_label",
    "rali": "learn_rali",
    "probe": "learn_lora method=probe",  # the field's baseline: a head on pooled vision features
    "grpo": "grpo_learning",  # GRPO on the parsed answers; zero-shot: the starting model's
}

#: Methods whose LMM is another run's (RALI's student distils from its teacher, the LoRA run of
#: the same seed): they take no ``model.pretrained``.
FROM_TEACHER = {"rali"}

#: --smoke: a tiny learning set, one step, one validation and one test batch.
SMOKE = [
    "dataset.train_images=16", "dataset.val_images=8", "dataset.test_images=8",
    "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1", "callbacks.plots=null",
]  # fmt: skip
#: --smoke, RALI: a basis that 16 teacher texts can hold.
SMOKE_RALI = ["stage.pca.dim=8", "stage.basis.size=8", "stage.basis.buckets=4"]


def run(
    method: str,
    seed: int,
    out: Path,
    extra: list[str],
    lora_runs: dict,
    smoke: bool = False,
    pretrained: str | None = None,
) -> dict:
    """Train one method with one seed in a ``train.py`` process (``smoke``: in this one);
    returns its metrics.json."""
    folder = out / f"{method}_seed{seed}"
    experiment, *overrides = METHODS[method].split()
    args = [f"experiment={experiment}", *overrides, f"seed={seed}", *extra]
    if pretrained is not None and method not in FROM_TEACHER:  # those read it via the teacher
        args.append(f"model.pretrained={pretrained}")
    if method == "rali":
        args.append(f"teacher.run={lora_runs[seed]}")
        args += SMOKE_RALI if smoke else []
    if smoke:  # in this process
        sys.path.insert(0, str(REPO))
        from tests.training import train_in_process

        metrics = train_in_process(args, folder, cache_dir=out / "cache")
    else:
        env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
               "PYTHONWARNINGS": "ignore"}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "train.py", *args, f"hydra.run.dir={folder}", "logger=csv"],
            cwd=REPO, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"{method} seed {seed} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            )
        metrics = json.loads((folder / "metrics.json").read_text())
    metrics["folder"] = str(folder)
    rewards = reward_epochs(folder, metrics.get("epochs"))
    if rewards:
        metrics["reward_first"], metrics["reward_last"] = rewards
    print(
        f"  {method:<15} seed {seed}: zero-shot {metrics.get('zeroshot/srcc')} "
        f"test srcc {metrics['test/srcc']:.4f} ({metrics['wall_time_s']:.0f} s)"
        + (f", mean reward {rewards[0]:.3f} -> {rewards[1]:.3f}" if rewards else ""),
        flush=True,
    )
    return metrics


def reward_epochs(folder: Path, epochs: int | None) -> tuple[float, float] | None:
    """A GRPO run's mean reward over its first and its last epoch's steps (None: not GRPO),
    ``epochs`` the run's (its metrics.json)."""
    import csv

    path = folder / "grpo_rewards.csv"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        rewards = [float(row["reward"]) for row in csv.DictReader(f)]
    per_epoch = max(1, len(rewards) // max(1, int(epochs or 1)))
    return statistics.fmean(rewards[:per_epoch]), statistics.fmean(rewards[-per_epoch:])


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


#: The reference's learning set, under the benchmark's folder.
NSS_SET = "nss_learning_set"


def by_photograph(results: dict[str, list[dict]], nss, labels: Path) -> str:
    """A table of test SRCC per held-out photograph: each method's mean over its runs (from
    their ``predictions_test.csv``), then the classical reference's (``nss``, an
    :class:`~iqa_lightning.tiny.nss.NSSReport`); ``labels`` is the set's ``labels.csv`` (its
    ``photo`` column). NaN where a photograph has fewer than two test images."""
    import csv

    from iqa_lightning.bootstrap import bootstrap_intervals
    from iqa_lightning.sweep_stats import read_predictions
    from iqa_lightning.tiny.world import HELD_OUT_PHOTOS

    with open(labels, newline="", encoding="utf-8") as f:
        photo_of = {row["image"]: row["photo"] for row in csv.DictReader(f)}
    photos = [p for p in HELD_OUT_PHOTOS if p in set(photo_of.values())]

    def srcc(scored: list[tuple[str, float, float]], photo: str) -> float:
        rows = [(target, score) for image, target, score in scored if photo_of[image] == photo]
        return bootstrap_intervals([r[1] for r in rows], [r[0] for r in rows], n=0)["srcc"]

    runs_of = {
        method: [read_predictions(Path(r["folder"]) / "predictions_test.csv") for r in runs]
        for method, runs in results.items()
    }
    runs_of["nss reference"] = [
        [(image, nss.test_mos[image], score) for image, score in scores.items()]
        for scores in nss.test_scores
    ]
    lines = [
        "test SRCC per held-out photograph (mean over seeds):",
        f"| {'method':<15} | " + " | ".join(f"{p:>7}" for p in photos) + " |",
        "|" + "|".join("---" for _ in range(len(photos) + 1)) + "|",
    ]
    for method, scored in runs_of.items():
        cells = [statistics.fmean(srcc(run, photo) for run in scored) for photo in photos]
        lines.append(f"| {method:<15} | " + " | ".join(f"{c:>7.3f}" for c in cells) + " |")
    return "\n".join(lines)


def reference(out: Path, seeds: list[int], smoke: bool = False):
    """The classical reference on the runs' learning set (regenerated under ``out``, byte for
    byte the same images; ``smoke``: the smoke runs' sizes and a few epochs)."""
    from iqa_lightning.data.datasets.learning import LearningDataModule
    from iqa_lightning.tiny.nss import nss_report

    sizes = dict(train_images=16, val_images=8, test_images=8) if smoke else {}
    datamodule = LearningDataModule(root=out / NSS_SET, **sizes)
    return nss_report(datamodule, seeds, epochs=3 if smoke else 200)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="default: every method (--smoke: prompt)")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs for all")
    parser.add_argument(
        "--pretrained", type=Path, default=None,
        help="a tiny LLaVA folder that `python -m iqa_lightning.tiny.pretrain --out` wrote "
        "(default: the committed one): every method runs on it",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="one step of seed 0, tiny data, in this process (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    methods = args.methods or (["prompt"] if args.smoke else list(METHODS))
    args.seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    if args.smoke and args.epochs is None:  # RALI's phases before its last take 2 epochs
        args.epochs = 3 if "rali" in methods else 1
    if args.smoke and args.out is None:  # nothing to keep: removed at the end
        with tempfile.TemporaryDirectory(prefix="bench_learning_smoke_") as tmp:
            return main([*(argv if argv is not None else sys.argv[1:]), "--out", tmp])
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_learning_"))
    extra = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    pretrained = None  # checked here, not in the first of 27 runs
    if args.pretrained is not None:
        pretrained = trained_folder(str(args.pretrained.resolve()), LMM_FOLDER)
    extra += SMOKE if args.smoke else []
    if "rali" in methods and "lora" not in methods:
        methods.insert(0, "lora")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    lora_runs: dict[int, str] = {}
    print(
        f"bench_learning: {len(methods)} methods x {len(args.seeds)} seeds into {out}", flush=True
    )
    for method in methods:
        for seed in args.seeds:
            metrics = run(method, seed, out, extra, lora_runs, args.smoke, pretrained)
            if method == "lora":
                lora_runs[seed] = metrics["folder"]
            if method == "rali":  # the untrained student's figure says nothing: its teacher's
                teacher = results["lora"][args.seeds.index(seed)]
                metrics["zeroshot/srcc"] = teacher["zeroshot/srcc"]
            results[method].append(metrics)
    text, last = table(results)
    print(text)
    for method, runs in results.items():
        if "reward_first" in runs[0]:
            first = statistics.fmean(r["reward_first"] for r in runs)
            final = statistics.fmean(r["reward_last"] for r in runs)
            print(f"{method}: mean reward, first epoch {first:.3f}, last epoch {final:.3f}")
    nss = reference(out, args.seeds, args.smoke)
    print(nss.line())
    print(by_photograph(results, nss, out / NSS_SET / "labels.csv"))
    print(
        f"learning: min gain {last['min_gain']:.3f} best srcc {last['best_srcc']:.3f} "
        f"zero-shot {last['zero_shot']:.3f}"
    )
    return last


if __name__ == "__main__":
    main()
