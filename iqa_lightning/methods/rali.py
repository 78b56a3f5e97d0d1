"""RALI (arXiv 2510.11369): an LLM-free CLIP scorer distilled from a teacher LMM's texts.

A new run prepares its scorer on the training split first (:meth:`RALI.prepare`, before the
module is built: teacher texts, CLIP text embeddings, PCA, the bucketed k-means basis, each
step's artefact in the run's ``distill/`` folder: :func:`iqa_lightning.distill.build.prepare`);
the module is then built from those files. A finished run is rebuilt from its exported
``scorer/`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqa_lightning.distill.build import build_rali_module, prepare
from iqa_lightning.methods import Method, register
from iqa_lightning.run_folder import RunFolder


@register
class RALI(Method):
    name = "rali"
    rebuild_files = ((RunFolder.SCORER / "scorer.json").as_posix(),)

    def prepare(self, cfg: Any, datamodule: Any, out: Path) -> list[Path]:
        folder = prepare(cfg, datamodule, Path(out))
        return sorted(folder.iterdir())

    def build_module(self, cfg: Any, run: Path | None = None, datamodule: Any = None):
        return build_rali_module(cfg, run=run)

    def missing_files(self, run: Path) -> list[str]:
        """A run stopped before the export is rebuilt from its ``distill/init`` scorer."""
        files = RunFolder(run)
        if (files.scorer / "scorer.json").exists() or (files.distill / "init").is_dir():
            return []
        return list(self.rebuild_files)


def published_scorer(
    pretrained: str | Path, dtype: str = "float32", score_range: Any = None
):  # fmt: skip
    """A frozen scoring module of a RALI scorer folder (``scorer.json``) or RALI's release
    (``conf/scorer/rali.yaml``, ``python -m iqa_lightning.score scorer=rali``): its
    ``image_size``, and ``resize`` as CLIP's processor does (short side, centre crop)."""
    from iqa_lightning.models.rali import load_scorer
    from iqa_lightning.scorer import rali_module

    rali = load_scorer(pretrained, dtype=dtype, score_range=score_range)
    module = rali_module(rali)
    module.image_size, module.resize = int(rali.image_size), "short_side_crop"
    return module
