"""``scoring.json``: what an exported checkpoint folder needs besides its weights to score as
the run it was exported from (``python -m iqa_lightning.export``; docs/export.md).

Everything a run tunes that merges into the checkpoint (LoRA, the projector) is in the weights.
What cannot be merged is written beside them and read back by :meth:`Backbone.from_pretrained`
(``backbone.scoring``):

- ``score``: the run's score head (:class:`~iqa_lightning.models.score.WordScore` arguments:
  question, answer prefix, words, weights, name);
- ``prompt``: the run's pixel prompt or Q-Adapt prompter (its config, ``_target_`` and
  arguments) with its tensors in ``scoring.safetensors`` (``prompt.*`` / ``prompter.*``, the
  run's own names);
- ``options``: the family loader's options the run scored with (mPLUG-Owl2's ``template``);
- ``image_size`` and ``resize``: the input side and square-making the run used.

Only the keys present apply: delete one (say ``score``) and the config's choice is used again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

SCORING_FILE = "scoring.json"
TENSORS_FILE = "scoring.safetensors"
#: The layout version this code writes and reads.
FORMAT = 1
#: The keys of ``scoring.json``, beside ``format``.
KEYS = ("run", "family", "image_size", "resize", "options", "score", "prompt", "tensors")


@dataclass(frozen=True)
class ExportedScoring:
    """The contents of an exported folder's ``scoring.json`` (module docstring).

    Attributes:
        source: The folder or hub id it was read from ("" before it is written).
        run: The run folder it was exported from.
        family: The backbone family.
        image_size: The run's ``model.image_size``.
        resize: The run's ``dataset.resize``.
        options: Loader options of the family (``template``).
        score: The score head's arguments.
        prompt: The prompt's config (``_target_`` and arguments; ``_partial_`` for one built
            with the backbone); None: no prompt.
        tensors: The prompt's tensors by the run's names (``prompt.*`` / ``prompter.*``).
    """

    source: str = ""
    run: str | None = None
    family: str | None = None
    image_size: int | None = None
    resize: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def check_image_size(self, image_size: int | None) -> None:
        """Raise unless ``image_size`` (``model.image_size``; None: the loader's default) is the
        side the run was tuned at.

        Raises:
            ValueError: Naming the key, both sides and the file.
        """
        if image_size is not None and self.image_size is not None:
            if int(image_size) != int(self.image_size):
                raise ValueError(
                    f"model.image_size={image_size} but model.pretrained={self.source!r} was "
                    f"tuned at {self.image_size} px ({SCORING_FILE}); add "
                    f"model.image_size={self.image_size}"
                )


def checkpoint_file(pretrained: str, name: str) -> Path | None:
    """``name`` in a local folder, or in a hub repo (fetched or from the cache); None if absent."""
    folder = Path(pretrained).expanduser()
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    if pretrained.startswith(("/", ".", "~")):
        return None
    from transformers.utils import cached_file

    try:
        found = cached_file(
            pretrained,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError as err:
        raise OSError(f"model.pretrained={pretrained!r}: cannot look for {name}: {err}") from err
    return Path(found) if found else None


def read_scoring(pretrained: str) -> ExportedScoring | None:
    """The ``scoring.json`` of a checkpoint folder or hub repo, with its tensors; None when the
    checkpoint has none (any checkpoint not written by the export).

    Raises:
        ValueError: The file is not JSON, is of a later format, or holds an unknown key.
        FileNotFoundError: It names a tensors file that is not there.
    """
    path = checkpoint_file(str(pretrained), SCORING_FILE)
    if path is None:
        return None
    where = f"model.pretrained={pretrained!r}: {SCORING_FILE}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{where} cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a JSON object")
    version = data.pop("format", FORMAT)
    if version != FORMAT:
        raise ValueError(f"{where} is format {version!r}; this version reads format {FORMAT}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {list(KEYS)}")
    tensors = {}
    if data.get("tensors"):
        tensors_path = checkpoint_file(str(pretrained), str(data["tensors"]))
        if tensors_path is None:
            raise FileNotFoundError(f"{where} names {data['tensors']!r}, which is not there")
        from safetensors.torch import load_file

        tensors = load_file(str(tensors_path))
    data.pop("tensors", None)
    data["options"] = dict(data.get("options") or {})
    return ExportedScoring(source=str(pretrained), tensors=tensors, **data)


def write_scoring(folder: str | Path, scoring: ExportedScoring) -> list[Path]:
    """Write ``scoring.json`` (and ``scoring.safetensors`` when there are tensors) in
    ``folder``; returns the files written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    data = {f.name: getattr(scoring, f.name) for f in fields(scoring)}
    data = {k: v for k, v in data.items() if k not in ("source", "tensors")}
    written = []
    if scoring.tensors:
        tensors = {k: v.detach().cpu().contiguous() for k, v in scoring.tensors.items()}
        save_file(tensors, str(folder / TENSORS_FILE), metadata={"format": "pt"})
        data["tensors"] = TENSORS_FILE
        written.append(folder / TENSORS_FILE)
    text = json.dumps({"format": FORMAT, **data}, indent=2) + "\n"
    (folder / SCORING_FILE).write_text(text, encoding="utf-8")
    return [folder / SCORING_FILE, *written]


__all__ = [
    "FORMAT",
    "SCORING_FILE",
    "TENSORS_FILE",
    "ExportedScoring",
    "checkpoint_file",
    "read_scoring",
    "write_scoring",
]
