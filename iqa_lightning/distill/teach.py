"""Teacher texts for RALI distillation (arXiv 2510.11369), as their own command:

    python -m iqa_lightning.distill.teach model=tiny_llava dataset=synthetic out=texts.jsonl
    python -m iqa_lightning.distill.teach run=outputs/runs/<LMM run> dataset=koniq ...

Every image of ``split`` (the training split by default) gets the teacher's greedy answer to
``question`` (or, with ``generation``, its answer to that prompt and sampling, texts without a
parsable score counted in ``<out>.parse.json``), appended to ``out`` batch by batch
(:class:`~iqa_lightning.distill.texts.TextCache`: a re-run skips what is there).
``train.py stage=rali teacher=texts teacher.texts=<out>`` then distils from the file.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from iqa_lightning import hydra_entry
from iqa_lightning.errors import ConfigError


def teach(cfg: DictConfig) -> dict[str, str]:
    """Generate (or complete) the texts of ``cfg.split``; returns them by image id."""
    from hydra.utils import instantiate

    from iqa_lightning.distill.build import _device
    from iqa_lightning.distill.teacher import build_teacher, generate_texts
    from iqa_lightning.distill.texts import TextCache

    model = cfg.get("model")
    if (model is None) == (not cfg.get("run")):
        raise ConfigError("give exactly one of model=<preset> or run=<LMM run folder>")
    if model is not None:
        cfg.dataset.image_size = int(model.image_size)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_records()
    datamodule.setup()
    items = datamodule.dataset(str(cfg.split)).items
    teacher = build_teacher(
        model, cfg.get("run"), int(cfg.max_new_tokens), _device(cfg.device), cfg.get("generation")
    )
    cache = TextCache(Path(str(cfg.out)).expanduser())
    texts = generate_texts(
        teacher, items, cache, str(cfg.question), int(cfg.batch_size), datamodule.resize
    )
    print(f"{len(texts)} texts of {cfg.split} images in {cache.path}", flush=True)
    return texts


_hydra_main = hydra_entry.driver("teach")(teach)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.distill.teach`` (Hydra's own errors on one line:
    :mod:`iqa_lightning.hydra_entry`)."""
    with hydra_entry.reported():
        _hydra_main()


if __name__ == "__main__":
    main()
