"""Export driver: a finished run as a checkpoint folder that loads as ``model.pretrained``.

    python -m iqa_lightning.export run=outputs/runs/<run> out=exported/<name>
    python -m iqa_lightning.export run=<run> out=<folder> export.push_to_hub=<user>/<repo>

The run's LoRA is merged into the weights and a tuned projector kept in them; what cannot be
merged (a pixel prompt, a feature prompter) and the run's score head, template, input side and
resize go to ``scoring.json``, which the loaders read back, so

    python -m iqa_lightning.score images=<folder> model=<family preset> model.pretrained=<out>

scores as the run does (the driver prints the exact command). mPLUG-Owl2 runs are written in
the original layout, which Q-Align's own code loads. ``out`` must be new or empty; a run that
scores without an LMM (its exported ``scorer/`` folder is already its export) is refused with
what to use instead. Everything is in :mod:`iqa_lightning.exporting`; docs/export.md has the layout.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from iqa_lightning import hydra_entry
from iqa_lightning.errors import ConfigError
from iqa_lightning.exporting import Exported, check_out, export_run
from iqa_lightning.runs import run_folder


def export(cfg: DictConfig) -> Exported:
    """Export ``cfg.run`` to ``cfg.out`` (and upload it with ``export.push_to_hub``)."""
    for key, what in (("run", "the train.py run folder to export"),
                      ("out", "the checkpoint folder to write")):  # fmt: skip
        if OmegaConf.is_missing(cfg, key) or not str(cfg.get(key) or "").strip():
            raise ConfigError(f"{key}=<folder> is required: {what}")
    run_folder(cfg.run)  # before anything loads
    check_out(cfg.out)
    settings = cfg.get("export") or {}
    exported = export_run(cfg.run, cfg.out, push=settings.get("push_to_hub"),
                          private=settings.get("private"))  # fmt: skip
    lora = f"{exported.merged_lora} LoRA layers merged" if exported.merged_lora else "no LoRA"
    prompt = "; tuned prompt in scoring.json" if exported.scoring.prompt else ""
    print(f"\nexported {cfg.run} -> {exported.folder} ({exported.family}; {lora}{prompt})",
          flush=True)  # fmt: skip
    print(f"score it as the run does:\n  {exported.command}", flush=True)
    if exported.pushed:
        print(f"uploaded to {settings.get('push_to_hub')}: {exported.pushed}", flush=True)
    return exported


_hydra_main = hydra_entry.driver("export")(export)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.export``."""
    with hydra_entry.reported():
        _hydra_main()


if __name__ == "__main__":
    main()
