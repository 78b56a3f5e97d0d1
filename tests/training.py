"""Train a composed config in the test process, with the run folder Hydra would write."""

import json

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices, train


def train_in_process(overrides, out, cache_dir) -> dict:
    """Compose ``train.yaml`` with ``overrides`` and train in this process; metrics.json."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=quote_numeric_choices(
                [
                    *overrides,
                    f"paths.output_dir={out}",
                    f"paths.cache_dir={cache_dir}",
                    "logger=none",
                    "callbacks.explanations=null",
                ]
            ),  # fmt: skip
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (out / ".hydra").mkdir(parents=True, exist_ok=True)  # as Hydra writes it (rebuilt by RALI)
    OmegaConf.save(job, out / ".hydra" / "config.yaml", resolve=True)
    train(job)
    return json.loads((out / "metrics.json").read_text())
