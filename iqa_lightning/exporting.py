"""A finished run as a checkpoint folder of its backbone's family (``python -m
iqa_lightning.export``; docs/export.md), and the way such a folder's ``scoring.json`` comes back
into a scorer.

:func:`export_run` rebuilds the run, merges its LoRA into the weights (``peft``'s
``merge_and_unload``), keeps a tuned projector in them, and writes the folder the family's
loader reads (``model.pretrained=<folder>``): ``transformers``' ``save_pretrained`` layout for
LLaVA, Bunny and Qwen2-VL, the ORIGINAL mPLUG-Owl2 layout for mPLUG-Owl2 (its ``config.json``
with ``model_type: mplug_owl2``, its parameter names, its SentencePiece tokenizer and CLIP
processor files), which Q-Align's own code loads. What cannot be merged (a pixel prompt, a
Q-Adapt prompter) and how the run read its score (head, template, input side, resize) go to
``scoring.json`` (:mod:`iqa_lightning.models.backbones.scoring_file`), which the loaders read
back; :func:`exported_parts` puts its head and prompt into the parts a method builds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.backbones.scoring_file import (
    SCORING_FILE,
    ExportedScoring,
    checkpoint_file,
    write_scoring,
)
from iqa_lightning.models.lora import lora_parameters
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer
from iqa_lightning.run_folder import RunFolder
from iqa_lightning.runs import load_run_config, rebuild_run, run_folder

log = logging.getLogger("iqa_lightning.export")

#: The model preset that loads each family's checkpoint folders (what the printed command uses
#: when the run's own model was a tiny or local one).
FAMILY_PRESETS = {
    "llava": "llava_1_5_7b",
    "bunny": "bunny_v1_0_3b",
    "qwen2_vl": "qwen2_5_vl_7b",
    "mplug_owl2": "mplug_owl2_7b",
}
#: The image processor written for a family whose run had no checkpoint to copy one from.
IMAGE_PROCESSORS = {
    "llava": "CLIPImageProcessor",
    "bunny": "SiglipImageProcessor",
    "qwen2_vl": "Qwen2VLImageProcessor",
}
#: mPLUG-Owl2's original class name (``architectures`` in its config.json).
OWL2_ARCHITECTURE = "MPLUGOwl2LlamaForCausalLM"
#: The LLaMA tokenizer files of a published mPLUG-Owl2 folder, copied as they are.
OWL2_TOKENIZER_FILES = (
    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
)  # fmt: skip


# ------------------------------------------------------------------------------ reading back
def exported_parts(parts: dict[str, Any]) -> dict[str, Any]:
    """``parts`` (``backbone``, ``prompt``, ``score``) with what the backbone's exported folder
    brings (``backbone.scoring``): its score head instead of the config's, and its tuned prompt
    (built and loaded) where the config has none. Unchanged for any other checkpoint.

    Raises:
        ConfigError: The config names a prompt too (``prompt=...``) while the folder brings one.
    """
    backbone = parts["backbone"]
    scoring: ExportedScoring | None = getattr(backbone, "scoring", None)
    if scoring is None:
        return parts
    parts = dict(parts)
    brought = []
    if scoring.score is not None:
        parts["score"] = WordScore(**scoring.score)
        brought.append(f"score head {scoring.score.get('name', '')!r}")
    if scoring.prompt is not None:
        target = str(scoring.prompt.get("_target_", "")).rsplit(".", 1)[-1]
        if not isinstance(parts["prompt"], NoPrompt):
            raise ConfigError(
                f"model.pretrained={scoring.source!r} brings its tuned prompt ({target}, "
                f"{SCORING_FILE}); leave prompt= out (prompt=none)"
            )
        parts["prompt"] = _tuned_prompt(scoring, backbone)
        brought.append(f"tuned {target}")
    if scoring.options:
        brought.append(", ".join(f"model.{k}={v}" for k, v in scoring.options.items()))
    log.info("model.pretrained=%s: %s brings the %s", scoring.source, SCORING_FILE,
             "; ".join(brought) or "nothing")  # fmt: skip
    return parts


def _tuned_prompt(scoring: ExportedScoring, backbone: nn.Module) -> nn.Module:
    prompt = instantiate(scoring.prompt)
    if not isinstance(prompt, nn.Module):  # built with the backbone (a Q-Adapt prompter)
        prompt = prompt(backbone=backbone)
    prefix = "prompter." if getattr(prompt, "group", "prompt") == "prompter" else "prompt."
    state = {k[len(prefix) :]: v for k, v in scoring.tensors.items() if k.startswith(prefix)}
    try:
        prompt.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"model.pretrained={scoring.source!r}: the prompt tensors of {SCORING_FILE} do not fit "
            f"its prompt ({str(err).splitlines()[0]})"
        ) from None
    return prompt


# ---------------------------------------------------------------------------------- export
@dataclass
class Exported:
    """What :func:`export_run` wrote.

    Attributes:
        folder: The checkpoint folder.
        family: The backbone family.
        merged_lora: LoRA layers merged into the weights (0: the run had none).
        scoring: What ``scoring.json`` holds.
        command: A scoring command that loads the folder as the run scored.
        pushed: The hub repo it was uploaded to, if any.
    """

    folder: Path
    family: str
    merged_lora: int
    scoring: ExportedScoring
    command: str
    pushed: str | None = None
    files: list[str] = field(default_factory=list)


def check_out(out: str | Path | None) -> Path:
    """``out`` as a folder the export may create: new, or empty.

    Raises:
        ConfigError: Not given, a file, or a folder that holds something.
    """
    if out is None or not str(out).strip():
        raise ConfigError("out=<folder> is required: the checkpoint folder to write")
    path = Path(str(out)).expanduser()
    if path.is_file():
        raise ConfigError(f"out={out}: is a file; give a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(
            f"out={out}: the folder exists and is not empty; give a new or empty folder "
            "(an export never overwrites)"
        )
    return path


def check_exportable(run: Path) -> None:
    """Refuse, before anything loads, a run whose scorer no LMM checkpoint can hold.

    Raises:
        ConfigError: A run that wrote an LLM-free scorer folder (RALI), naming what to use.
    """
    scorer = RunFolder(run).scorer
    if scorer.is_dir():
        raise ConfigError(
            f"run={run} scores without an LMM (an LLM-free scorer, exported with the run in "
            f"{scorer}); there is no LMM checkpoint to export. Score with `python -m "
            f"iqa_lightning.score scorer=rali scorer.pretrained={scorer} images=<folder>` or "
            f"iqa_lightning.create_metric('{run}'); copy that folder to share it"
        )


def merge_lora(backbone: nn.Module) -> int:
    """Merge the backbone's LoRA adapters into its weights with ``peft``'s
    ``merge_and_unload`` and drop them; returns how many layers were merged.

    The adapters were injected in place (:func:`~iqa_lightning.models.lora.add_lora`), so
    ``peft``'s LoRA tuner is put back around the model with the same config (which draws the
    adapters again) and the tuned values are copied back before the merge.
    """
    from peft.tuners.lora import LoraModel

    model = backbone.model
    config = (getattr(model, "peft_config", None) or {}).get("default")
    tuned = {name: p.detach().clone() for name, p in lora_parameters(backbone).items()}
    if config is None or not tuned:
        return 0
    layers = {name.split(".lora_")[0] for name in tuned}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft notes the model already holds a peft_config
        tuner = LoraModel(model, config, "default")
    drawn = lora_parameters(backbone)
    if drawn.keys() != tuned.keys():
        raise RuntimeError(f"peft rebuilt {len(drawn)} LoRA tensors for {len(tuned)} tuned ones")
    with torch.no_grad():
        for name, param in drawn.items():
            param.copy_(tuned[name])
    tuner.merge_and_unload(safe_merge=True)
    left = lora_parameters(backbone)
    if left:
        raise RuntimeError(f"LoRA tensors left after the merge: {sorted(left)[:3]}")
    return len(layers)


def _stats(backbone: nn.Module) -> tuple[list[float], list[float]]:
    """The image mean and std the backbone normalises with (ImageNet's with
    ``normalization=imagenet``): the exported processor carries them, so the folder is read as
    the run read its images."""
    return backbone.image_mean.flatten().tolist(), backbone.image_std.flatten().tolist()


def _save_transformers(backbone: nn.Module, out: Path, source: str | None) -> None:
    """``save_pretrained`` of the model and tokenizer, and the family's image processor (the
    checkpoint's own where the run had one) with the statistics the run normalised with."""
    import transformers

    backbone.model.save_pretrained(str(out))
    backbone.tokenizer.save_pretrained(str(out))
    mean, std = _stats(backbone)
    processor = None
    if source and checkpoint_file(source, "preprocessor_config.json") is not None:
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError, KeyError) as err:
            log.info("the image processor of %s is not read (%s); writing the family's", source,
                     err)  # fmt: skip
    if processor is None:
        size = int(backbone.image_size)
        cls = getattr(transformers, IMAGE_PROCESSORS.get(backbone.family, "CLIPImageProcessor"))
        settings: dict[str, Any] = {}
        if cls.__name__ == "CLIPImageProcessor":
            settings = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
        elif cls.__name__ == "SiglipImageProcessor":
            settings = {"size": {"height": size, "width": size}}
        processor = cls(**settings)
    processor.image_mean, processor.image_std = mean, std
    processor.save_pretrained(str(out))


def _owl2_config(backbone: nn.Module, source: str | None) -> dict[str, Any]:
    """mPLUG-Owl2's original ``config.json``: the checkpoint's own as it was (the architecture
    is unchanged by the merge), else written from the model's config in the original keys
    (``torch_dtype``, ``rope_theta`` / ``rope_scaling``, the original class name)."""
    dtype = str(backbone.dtype).removeprefix("torch.")
    found = checkpoint_file(source, "config.json") if source else None
    if found is not None:
        config = json.loads(found.read_text(encoding="utf-8"))
        if config.get("model_type") == "mplug_owl2":
            config["torch_dtype"] = dtype
            return config
    config = backbone.model.config.to_dict()
    config.pop("dtype", None)
    rope = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", "default")
    config["rope_scaling"] = None if kind == "default" else {"type": kind,
                                                            "factor": rope.get("factor")}
    config.update(architectures=[OWL2_ARCHITECTURE], model_type="mplug_owl2", torch_dtype=dtype)
    return config


def _save_mplug_owl2(backbone: nn.Module, out: Path, source: str | None) -> None:
    """The original mPLUG-Owl2 layout: weights under their original names (safetensors), the
    original config.json, the checkpoint's LLaMA tokenizer files as they were (the tokenizer
    the run used, saved, when it had no checkpoint) and the CLIP processor file in the
    published format (size and crop as plain ints, bicubic) with the run's statistics."""
    backbone.model.save_pretrained(str(out))
    text = json.dumps(_owl2_config(backbone, source), indent=2, sort_keys=True) + "\n"
    (out / "config.json").write_text(text, encoding="utf-8")
    copied = []
    if source and checkpoint_file(source, "tokenizer.model") is not None:
        for name in OWL2_TOKENIZER_FILES:
            found = checkpoint_file(source, name)
            if found is not None:
                shutil.copyfile(found, out / name)
                copied.append(name)
    if not copied:
        backbone.tokenizer.save_pretrained(str(out))
    mean, std = _stats(backbone)
    size = int(backbone.image_size)
    processor = {
        "crop_size": size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": mean, "image_std": std,
        "resample": 3, "size": size,
    }  # fmt: skip
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def _scoring(run: Path, run_cfg: Any, scorer: LMMWordScorer) -> ExportedScoring:
    """What the run scores with besides the merged weights."""
    backbone, head = scorer.backbone, scorer.head
    score = {
        "name": head.name, "question": head.question, "answer_prefix": head.answer_prefix,
        "words": list(head.words), "weights": [float(w) for w in head.weights.tolist()],
    }  # fmt: skip
    part = scorer.prompter if scorer.prompter is not None else scorer.prompt
    prompt, tensors = None, {}
    if not isinstance(part, NoPrompt):
        earlier = getattr(backbone, "scoring", None)  # a run tuned on an exported folder
        if earlier is not None and earlier.prompt is not None:
            prompt = earlier.prompt
        else:
            prompt = OmegaConf.to_container(run_cfg.prompt, resolve=True)
        prefix = "prompter." if scorer.prompter is not None else "prompt."
        tensors = {k: v for k, v in scorer.state_dict().items() if k.startswith(prefix)}
    template = getattr(backbone, "template_name", None)
    return ExportedScoring(
        run=str(run),
        family=backbone.family,
        image_size=int(backbone.image_size),
        resize=str(OmegaConf.select(run_cfg, "dataset.resize", default=None) or "squash"),
        options={"template": template} if template else {},
        score=score,
        prompt=prompt,
        tensors=tensors,
    )


def _command(run_cfg: Any, run: Path, out: Path, scoring: ExportedScoring, dtype: str) -> str:
    """``python -m iqa_lightning.score`` with the folder, as the run scored."""
    choice = None
    files = RunFolder(run)
    if run_cfg.model.get("pretrained") and files.hydra.is_file():
        hydra = OmegaConf.load(files.hydra)
        choice = OmegaConf.select(hydra, "hydra.runtime.choices.model", default=None)
    elif run_cfg.model.get("pretrained") and files.overrides.is_file():
        given = [str(o) for o in OmegaConf.load(files.overrides) or []]
        choice = next((o.split("=", 1)[1] for o in given if o.startswith("model=")), None)
    preset = choice or FAMILY_PRESETS.get(str(scoring.family), "<family preset>")
    return (
        f"python -m iqa_lightning.score images=<folder> model={preset} model.pretrained={out} "
        f"model.image_size={scoring.image_size} model.dtype={dtype} resize={scoring.resize}"
    )


def _write_readme(out: Path, run: Path, exported: Exported) -> None:
    lines = [
        f"# {out.name}",
        "",
        f"A {exported.family} checkpoint exported by iqa-lightning from the run `{run.name}`: "
        f"LoRA merged ({exported.merged_lora} layers), tuned projector included. "
        f"`{SCORING_FILE}` holds the run's score head"
        + (" and its tuned prompt (`scoring.safetensors`)" if exported.scoring.prompt else "")
        + "; iqa-lightning's loaders read it back.",
        "",
        "```bash",
        exported.command,
        "```",
    ]
    if exported.family == "mplug_owl2":
        lines += ["", "The folder is in mPLUG-Owl2's original layout: Q-Align's code loads it."]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def push_to_hub(folder: Path, repo_id: str, private: bool | None = None) -> str:
    """Upload ``folder`` to the hub repo ``repo_id`` (created if needed) with
    ``huggingface_hub``'s ``upload_folder``; a login is needed (``hf auth login`` or
    ``HF_TOKEN``). Returns the commit URL.

    Raises:
        ConfigError: The upload failed (offline, no login, no right to the repo); names the
            repo and says the folder is written.
    """
    import huggingface_hub

    try:
        huggingface_hub.create_repo(repo_id, private=private, exist_ok=True)
        commit = huggingface_hub.upload_folder(
            folder_path=str(folder), repo_id=repo_id,
            commit_message=f"Export {folder.name} (iqa-lightning)",
        )  # fmt: skip
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"export.push_to_hub={repo_id}: the upload failed ({reason}); the folder is "
            f"written: {folder}"
        ) from err
    return str(getattr(commit, "commit_url", commit))


def export_run(
    run: str | Path,
    out: str | Path,
    push: str | None = None,
    private: bool | None = None,
) -> Exported:
    """Write a finished run as a checkpoint folder of its backbone's family (module docstring).

    The folder is written beside ``out`` and renamed to it at the end, so a failed export
    leaves nothing.

    Args:
        run: A finished train.py run folder.
        out: A new or empty folder.
        push: A hub repo id to upload the folder to (:func:`push_to_hub`).
        private: Whether a repo created by the upload is private (None: the hub's default).

    Raises:
        FileNotFoundError: ``run`` is no finished run folder.
        ConfigError: ``out`` holds something; the run's scorer is not one an LMM checkpoint
            can hold (says what to use instead).
    """
    run = run_folder(run)
    out = check_out(out)
    check_exportable(run)
    run_cfg = load_run_config(run)
    module = rebuild_run(run, run_cfg)
    scorer = module.scorer
    if type(scorer) is not LMMWordScorer:
        raise ConfigError(
            f"run={run}: its scorer ({type(scorer).__name__}) does more than read quality words "
            "after one prompt, which a checkpoint folder cannot hold; score the run itself "
            f"(`python -m iqa_lightning.score run={run} images=<folder>`)"
        )
    backbone = scorer.backbone
    scoring = _scoring(run, run_cfg, scorer)
    merged = merge_lora(backbone)
    source = run_cfg.model.get("pretrained")
    source = str(source) if source else None
    dtype = str(backbone.dtype).removeprefix("torch.")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # a folder as any other, not mkdtemp's private one
    try:
        if backbone.family == "mplug_owl2":
            _save_mplug_owl2(backbone, work, source)
        else:
            _save_transformers(backbone, work, source)
        write_scoring(work, scoring)
        command = _command(run_cfg, run, out.resolve(), scoring, dtype)
        exported = Exported(out, backbone.family, merged, scoring, command)
        _write_readme(work, run, exported)
        if out.is_dir():
            out.rmdir()  # empty (check_out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    exported.files = sorted(p.name for p in out.iterdir())
    if push:
        exported.pushed = push_to_hub(out, push, private)
    return exported


__all__ = [
    "Exported",
    "check_exportable",
    "check_out",
    "export_run",
    "exported_parts",
    "merge_lora",
    "push_to_hub",
]
