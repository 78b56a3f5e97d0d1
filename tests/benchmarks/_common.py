"""Shared pieces of the model benchmarks: a padding-prompt IQAModule on a tiny backbone and a
fixed batch."""

from __future__ import annotations

import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from iqa_lightning.models.backbones import build_tiny_llava  # noqa: E402
from iqa_lightning.models.prompts import PaddingPrompt  # noqa: E402
from iqa_lightning.models.score import WordScore  # noqa: E402
from iqa_lightning.module import IQAModule  # noqa: E402

# name -> build_tiny_llava arguments
SIZES = {
    "tiny (hidden 64, 2 layers)": {"hidden_size": 64, "num_layers": 2},
    "small (hidden 256, 4 layers)": {"hidden_size": 256, "num_layers": 4},
}


def padding_module(backbone, lr: float = 1.0, size: int = 8) -> IQAModule:
    """Stage 2 of the demo: a padding prompt trained with SGD on a frozen backbone."""
    return IQAModule(
        backbone,
        PaddingPrompt(backbone.image_size, size=size, init_scale=0.5),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[{"name": "stage2", "trainable": ["prompt"], "epochs": None,
                 "optimizer": partial(torch.optim.SGD, lr=lr, momentum=0.9)}],
    )  # fmt: skip


def tiny_module(hidden_size: int, num_layers: int, image_size: int = 64) -> IQAModule:
    torch.manual_seed(0)
    backbone = build_tiny_llava(
        image_size=image_size, hidden_size=hidden_size, num_layers=num_layers
    )
    return padding_module(backbone)


def fixed_batch(batch_size: int, image_size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixels": torch.rand(batch_size, 3, image_size, image_size, generator=generator),
        "target": torch.rand(batch_size, generator=generator),
        "mos_raw": torch.rand(batch_size, generator=generator) * 4 + 1,
        "image_id": [f"img{i:03d}" for i in range(batch_size)],
    }


def summary(values: list[float]) -> tuple[float, float]:
    """(median, best) of per-round figures."""
    return statistics.median(values), min(values)
