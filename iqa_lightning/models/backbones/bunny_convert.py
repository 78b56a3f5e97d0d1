"""Convert a published Bunny checkpoint (``BAAI/Bunny-v1_0-3B``) to a ``transformers`` LLaVA
folder (``model_type: llava``), once, so later runs load it directly::

    python -m iqa_lightning.models.backbones.bunny_convert BAAI/Bunny-v1_0-3B /models/bunny-llava

Reading (:mod:`.bunny_checkpoint`) and the adapter (:mod:`.bunny`) stay free of each other's
command: this module sits above both.
"""

from __future__ import annotations

import argparse

from iqa_lightning.models.backbones.bunny import BunnyBackbone
from iqa_lightning.models.backbones.bunny_checkpoint import save_converted


def main(argv: list[str] | None = None) -> None:
    """``python -m iqa_lightning.models.backbones.bunny_convert SRC DST``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", help="published Bunny folder or hub id (BAAI/Bunny-v1_0-3B)")
    parser.add_argument("target", help="folder to write the converted LLaVA checkpoint to")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args(argv)
    backbone = BunnyBackbone.from_pretrained(args.source, dtype=args.dtype)
    print(save_converted(backbone, args.target))


if __name__ == "__main__":
    main()
