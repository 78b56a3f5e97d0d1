"""Model parts: frozen backbones, prompts and score heads (no Lightning, no Hydra here)."""
