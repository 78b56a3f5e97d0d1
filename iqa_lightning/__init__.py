"""iqa-lightning: adapt large multimodal models to image quality assessment."""

__version__ = "0.1.0"
