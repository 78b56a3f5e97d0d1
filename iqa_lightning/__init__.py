"""iqa-lightning: adapt large multimodal models to image quality assessment.

``iqa_lightning.create_metric(name)`` gives a metric module (:mod:`iqa_lightning.metric`); it is
imported on first use, so ``import iqa_lightning`` stays light for the drivers.
"""

__version__ = "0.1.0"
__all__ = ["create_metric"]


def __getattr__(name: str):
    if name == "create_metric":  # torch, Lightning and transformers: loaded only when asked for
        from iqa_lightning.metric import create_metric

        return create_metric
    raise AttributeError(f"module 'iqa_lightning' has no attribute {name!r}")
