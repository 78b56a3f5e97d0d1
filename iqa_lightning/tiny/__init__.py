"""Tiny models that have learned to see, trained offline in this repository, and their world.

- :mod:`.world`: the photographs, patterns, distortions, perception words and quality law;
- :mod:`.pretrain`: ``python -m iqa_lightning.tiny.pretrain`` trains the tiny LMM and CLIP;
- :mod:`.trained`: loads the committed folders (``model=tiny_llava_trained``,
  ``rali_encoder=tiny_clip_trained``).
"""
