"""Two-process CPU DDP run with a LoRA -> prompt phase switch; each rank saves its tensors.

    python tests/ddp/stage_switch.py OUT_DIR CACHE_DIR [--naive]

``--naive`` switches phases the way Lightning's ``BaseFinetuning`` does (flip ``requires_grad``,
rebuild the optimiser, keep the old DDP wrapper), to show what the real schedule prevents.
"""

import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import save_file

from iqa_lightning.callbacks import StageSchedule
from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule


class NaiveSchedule(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        target = pl_module.phase_for_epoch(trainer.current_epoch)
        if target != pl_module.phase_index:
            pl_module.set_phase(target)
            trainer.strategy.setup_optimizers(trainer)


class SaveRankTensors(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        tensors = pl_module.tuned_state_dict()
        save_file(tensors, str(self.out / f"rank{trainer.global_rank}.safetensors"))


def main() -> None:
    out, cache = Path(sys.argv[1]), Path(sys.argv[2])
    naive = "--naive" in sys.argv
    L.seed_everything(0)
    sgd = partial(torch.optim.SGD, lr=0.5)
    module = IQAModule(
        build_tiny_llava(),
        PaddingPrompt(64, size=8, init_scale=0.5),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[
            {"name": "stage1", "trainable": ["lora"], "epochs": 1, "optimizer": sgd},
            {"name": "stage2", "trainable": ["prompt"], "epochs": None, "optimizer": sgd},
        ],
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
    )
    dm = SyntheticDataModule(cache_dir=cache, n_refs=5, image_size=64, batch_size=4, seed=0)
    schedule = NaiveSchedule() if naive else StageSchedule(str(out))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[schedule, SaveRankTensors(out)],
        default_root_dir=out,
    )
    trainer.fit(module, datamodule=dm)


if __name__ == "__main__":
    main()
