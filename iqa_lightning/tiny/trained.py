"""Load the tiny models committed under ``iqa_lightning/tiny/trained/`` through the normal loaders.

``model=tiny_llava_trained`` and ``rali_encoder=tiny_clip_trained`` call these; ``pretrained``
may name another folder written by ``python -m iqa_lightning.tiny.pretrain --out <folder>``.
"""

from __future__ import annotations

from pathlib import Path

TRAINED_DIR = Path(__file__).resolve().parent / "trained"
LMM_FOLDER = "tiny_llava"
CLIP_FOLDER = "tiny_clip"


def trained_folder(pretrained: str | None, default: str) -> str:
    """``pretrained``, or the committed folder ``default`` when None; the folder must exist.

    Raises:
        FileNotFoundError: Naming the folder and the command that writes it.
    """
    folder = Path(pretrained).expanduser() if pretrained else TRAINED_DIR / default
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no trained tiny model in '{folder}' (config.json missing); write one with "
            f"python -m iqa_lightning.tiny.pretrain --out {folder.parent}"
        )
    return str(folder)


def load_tiny_llava(
    pretrained: str | None = None,
    image_size: int = 64,
    gradient_checkpointing: bool = False,
    normalization: str = "backbone",
    attn_implementation: str = "sdpa",
):
    """The pre-trained tiny LLaVA (fp32) as a :class:`~iqa_lightning.models.backbones.llava.LlavaBackbone`.

    Args:
        pretrained: Its folder; None: the committed one.
        image_size: Input side; must be the folder's (64).
        gradient_checkpointing: Recompute block activations in the backward pass.
        normalization: ``backbone`` (its CLIP statistics) or ``imagenet``.
        attn_implementation: ``sdpa`` or ``eager``.
    """
    from iqa_lightning.models.backbones.llava import LlavaBackbone

    return LlavaBackbone.from_pretrained(
        trained_folder(pretrained, LMM_FOLDER),
        image_size=image_size,
        dtype="float32",
        attn_implementation=attn_implementation,
        gradient_checkpointing=gradient_checkpointing,
        normalization=normalization,
    )


def load_tiny_clip(pretrained: str | None = None, image_size: int | None = 64):
    """The pre-trained tiny CLIP (image and text towers), RALI's student encoder.

    Args:
        pretrained: Its folder; None: the committed one.
        image_size: The crop size the preset declares; None: not checked.
    """
    from iqa_lightning.models.rali.clip import load_clip

    return load_clip(trained_folder(pretrained, CLIP_FOLDER), image_size=image_size)
