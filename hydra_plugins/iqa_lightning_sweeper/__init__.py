"""Hydra plugins of iqa-lightning (Hydra loads plugins from the ``hydra_plugins`` namespace)."""
