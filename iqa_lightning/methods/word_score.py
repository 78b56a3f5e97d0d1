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
from omegaconf import OmegaConf

from iqa_lightning.exporting import exported_parts
from iqa_lightning.methods import Method, register
from iqa_lightning.phases import phase_entries
from iqa_lightning.run_folder import RunFolder

log = logging.getLogger("iqa_lightning")


def stage_one_from(run: str | Path) -> tuple[dict | None, dict[str, Any]]:
    """LoRA settings and tuned tensors of a finished run, for ``stage.init_from``: only those
    of the groups the run trained (its LoRA; a prompt it built and left untrained stays behind,
    and the new run draws its own)."""
    from safetensors.torch import load_file

    run = Path(run).expanduser()
    config_file, tensors_file = RunFolder(run).config, RunFolder(run).tuned
    for path in (config_file, tensors_file):
        if not path.exists():
            raise FileNotFoundError(f"stage.init_from={str(run)!r}: no {path.relative_to(run)}")
    run_cfg = OmegaConf.load(config_file)
    lora = OmegaConf.to_container(run_cfg.stage.lora) if run_cfg.stage.get("lora") else None
    phases = OmegaConf.select(run_cfg, "module.phases", default=None) or run_cfg.stage.phases
    trained = {str(g) for phase in phase_entries(phases) for g in phase.get("trainable") or []}
    return lora, {"groups": trained | ({"lora"} if lora else set()),
                  "tensors": load_file(str(tensors_file))}  # fmt: skip


def trained_tensors(module: Any, earlier: dict) -> dict:
    """The tensors of ``earlier`` (:func:`stage_one_from`) that belong to a group the earlier
    run trained, by this module's group names (``prompt`` names its prompter)."""
    groups = module.parameter_groups()
    wanted = {
        "prompter" if g == "prompt" and "prompter" in groups else g for g in earlier["groups"]
    }
    keep = {name for group in wanted & set(groups) for name in groups[group]}
    return {name: t for name, t in earlier["tensors"].items() if name in keep}


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
