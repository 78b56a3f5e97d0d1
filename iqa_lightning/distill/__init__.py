"""RALI distillation (arXiv 2510.11369, https://arxiv.org/abs/2510.11369): an LLM-free CLIP
scorer aligned to a teacher LMM's texts.

Pipeline (see docs/rali.md): teacher texts (:mod:`.texts`, :mod:`.teach`) -> CLIP text
embeddings (:class:`~iqa_lightning.models.rali.text.TextEmbedder`) -> PCA
(:mod:`~iqa_lightning.models.rali.pca_fit`) -> bucketed basis
(:mod:`~iqa_lightning.models.rali.basis`) -> contrastive alignment, then MSE fine-tuning
(``stage=rali``) -> export (:meth:`~iqa_lightning.models.rali.scorer.RALIScorer.save`).
"""
