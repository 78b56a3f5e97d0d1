"""Word-score tuning: a frozen LMM scored through the probabilities of its quality words, with
the parts a run tunes (a pixel prompt, LoRA, a Q-Adapt prompter) and the module ``module``
names (:class:`~iqa_lightning.module.IQAModule`, or the perception-then-inference module).
``stage.init_from`` starts from an earlier run's tuned tensors (Q-Adapt's stage 2 after stage 1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from iqa_lightning.exporting import exported_parts
from iqa_lightning.methods import Method, register, stage_one_from, trained_tensors
from iqa_lightning.run_folder import RunFolder

log = logging.getLogger("iqa_lightning")


@register
class WordScore(Method):
    """Backbone (``model``), prompt (``prompt``), word-score head (``score``) and the module
    (``module``) of the config."""

    name = "word_score"

    def parts(self, cfg: Any) -> dict[str, Any]:
        parts = {
            "backbone": instantiate(cfg.model),
            "prompt": instantiate(cfg.prompt),
            "score": instantiate(cfg.score),
        }
        return exported_parts(parts)  # an exported folder's scoring.json: its head and prompt

    def build_module(self, cfg: Any, run: Path | None = None, datamodule: Any = None):
        parts = self.parts(cfg)
        if run is not None:  # lora.json gives the LoRA settings; tuned.safetensors holds all
            lora_file = RunFolder(run).lora
            lora = json.loads(lora_file.read_text()) if lora_file.exists() else None
            return instantiate(cfg.module, **parts, lora=lora)
        init_from = cfg.stage.get("init_from")
        if not init_from:
            return instantiate(cfg.module, **parts)
        lora, earlier = stage_one_from(init_from)
        module = instantiate(cfg.module, **parts, lora=lora)
        tensors = trained_tensors(module, earlier)
        module.load_tuned(tensors, strict=False)
        log.info("stage.init_from: loaded %d tensors from %s", len(tensors), init_from)
        return module
