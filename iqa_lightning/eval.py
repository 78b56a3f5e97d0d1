"""Cross-dataset evaluation of a finished run.

    python -m iqa_lightning.eval run=outputs/runs/demo_... dataset=koniq dataset.root=/data/koniq
    python -m iqa_lightning.eval run=... eval.datasets=[kadid,koniq] \\
        eval.roots.kadid=/data/kadid10k eval.roots.koniq=/data/koniq10k eval.name=synthetic2real

The run's backbone, prompt and score head are rebuilt from its ``.hydra/config.yaml`` and its
tuned tensors loaded from ``checkpoints/tuned.safetensors``. Each dataset is scored
whole (``eval.split=all``) or on its test split (``eval.split=test``). The run folder receives
``eval_<name>.json`` (SRCC / PLCC / KRCC and logistic-fitted PLCC per dataset), ``eval_<name>.md``
(the same as a markdown table) and ``predictions_eval_<dataset>.csv``; when the run logged to W&B
the table goes there too.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.callbacks.predictions import write_rows
from iqa_lightning.metrics import correlation_metrics, plcc_logistic
from iqa_lightning.train import CONFIG_DIR, build_module

log = logging.getLogger("iqa_lightning.eval")

COLUMNS = ("srcc", "plcc", "krcc", "plcc_logistic4", "plcc_logistic5", "n")


def load_run_config(run: Path) -> DictConfig:
    """The composed config a run was trained with."""
    path = run / ".hydra" / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"run={run}: no .hydra/config.yaml; is it a train.py run folder?")
    return OmegaConf.load(path)


def rebuild_run(run_cfg: DictConfig, run: Path):
    """Rebuild the run's LightningModule and load its trainable tensors."""
    from safetensors.torch import load_file

    weights = run / "checkpoints" / "tuned.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"run={run}: no {weights.relative_to(run)}; did the run finish?")
    module = build_module(run_cfg, run=run)
    module.load_tuned(load_file(str(weights)))
    return module.eval()


def dataset_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """The datasets to evaluate on: ``eval.datasets`` (a list of dataset options) or ``dataset``."""
    names = list(cfg.eval.get("datasets") or [])
    if not names:
        return {cfg.dataset.name: cfg.dataset}
    roots = cfg.eval.get("roots") or {}
    out = {}
    for name in names:
        path = Path(CONFIG_DIR) / "dataset" / f"{name}.yaml"
        if not path.exists():
            options = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"eval.datasets: no dataset option {name!r}; options are {options}")
        node = OmegaConf.load(path)
        if name in roots:
            node.root = roots[name]
        out[name] = node
    return out


@torch.no_grad()
def score_dataset(module, loader) -> list[dict[str, Any]]:
    """Score every image of a loader; one row per image."""
    device = next(module.parameters()).device
    rows = []
    for batch in loader:
        scores = module(batch["pixels"].to(device)).cpu()
        for image_id, mos, target, score in zip(
            batch["image_id"], batch["mos_raw"].tolist(), batch["target"].tolist(),
            scores.tolist(), strict=True,
        ):  # fmt: skip
            rows.append({"image_id": image_id, "mos_raw": mos, "target": target, "score": score})
    return rows


def correlations(rows: list[dict[str, Any]]) -> dict[str, float]:
    """SRCC / PLCC / KRCC (torchmetrics) and PLCC after 4- and 5-parameter logistic fits."""
    scores = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
    targets = torch.tensor([r["target"] for r in rows], dtype=torch.float64)
    metrics = correlation_metrics("")
    metrics.update(scores.float(), targets.float())
    out = {k: float(v) for k, v in metrics.compute().items()}
    out["plcc_logistic4"] = plcc_logistic(scores.numpy(), targets.numpy(), params=4)
    out["plcc_logistic5"] = plcc_logistic(scores.numpy(), targets.numpy(), params=5)
    out["n"] = len(rows)
    return out


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per dataset, one column per figure."""
    lines = ["| dataset | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, figures in results.items():
        cells = [
            str(figures[c]) if c == "n" else f"{figures[c]:.4f}" for c in COLUMNS
        ]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Evaluate the run ``cfg.run`` on every requested dataset and write the results."""
    from hydra.utils import instantiate

    run = Path(cfg.run).expanduser().resolve()
    run_cfg = load_run_config(run)
    module = rebuild_run(run_cfg, run)
    if torch.cuda.is_available():
        module = module.cuda()
    split = cfg.eval.split
    if split not in ("all", "test"):
        raise ValueError(f"eval.split={split!r} must be 'all' or 'test'")

    results = {}
    for name, node in dataset_configs(cfg).items():
        node = OmegaConf.merge(
            {"model": {"image_size": run_cfg.model.image_size}, "seed": run_cfg.get("seed", 0),
             "paths": cfg.paths},
            {"dataset": node},
        ).dataset  # fmt: skip
        datamodule = instantiate(node, image_size=int(run_cfg.model.image_size))
        datamodule.prepare_data()
        datamodule.setup("test")
        rows = score_dataset(module, datamodule.eval_dataloader(split))
        results[name] = correlations(rows)
        write_rows(run / f"predictions_eval_{name}.csv", rows)
        log.info("%s (%s, %d images): %s", name, split, len(rows), results[name])

    table_name = cfg.eval.get("name") or "_".join(results)
    (run / f"eval_{table_name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (run / f"eval_{table_name}.md").write_text(table)
    log_to_wandb(run, run_cfg, table_name, results)
    print(f"\n{run}/eval_{table_name}.md\n{table}", flush=True)
    return results


def log_to_wandb(run: Path, run_cfg: DictConfig, name: str, results: dict) -> None:
    """Add the table to the run's W&B run (resumed by id) when the run logged to W&B."""
    wandb_cfg = ((run_cfg.get("logger") or {}).get("loggers") or {}).get("wandb")
    folders = sorted((run / "wandb").glob("*run-*")) if (run / "wandb").exists() else []
    if wandb_cfg is None or not folders:
        return
    import wandb

    run_id = folders[-1].name.rsplit("-", 1)[-1]
    offline = bool(OmegaConf.select(run_cfg, "logger.offline", default=True))
    with wandb.init(
        project=wandb_cfg.get("project"), id=run_id, resume="allow", dir=str(run),
        mode="offline" if offline else "online",
    ) as wb:  # fmt: skip
        table = wandb.Table(columns=["dataset", *COLUMNS])
        for dataset, figures in results.items():
            table.add_data(dataset, *[figures[c] for c in COLUMNS])
            wb.log({f"eval/{dataset}/{k}": v for k, v in figures.items()})
        wb.log({f"eval/{name}": table})


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"Metric `\w+` will save all targets")
    evaluate(cfg)


if __name__ == "__main__":
    main()
