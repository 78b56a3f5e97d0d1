"""The preprocessing cache's configuration: defaults, config keys, dataset configs."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iqa_lightning.data import KADIDDataModule
from iqa_lightning.data.cache import default_cache_dir

from .cache_fixtures import entries
from .test_configs import OPTIONS, WRITERS, compose

# --- configuration ----------------------------------------------------------------------------


def test_cache_is_off_by_default_and_without_config_keys(tmp_path):
    dm = KADIDDataModule(root=tmp_path)
    assert dm.cache is None
    assert KADIDDataModule(root=tmp_path, cache=True).cache.root == default_cache_dir()


def test_default_cache_dir_follows_the_paths_config(monkeypatch, tmp_path):
    monkeypatch.delenv("IQA_CACHE_DIR", raising=False)
    monkeypatch.setenv("IQA_ROOT", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "preprocessed"
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "preprocessed"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"cache": "yes"}, "dataset.cache"), ({"cache": True, "cache_dir": ""}, "dataset.cache_dir")],
)
def test_bad_cache_arguments_name_the_config_key(tmp_path, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        KADIDDataModule(root=tmp_path, **kwargs)


@pytest.mark.parametrize("name", [name for name in OPTIONS if name != "synthetic"])
def test_dataset_configs_declare_the_cache_off(tmp_path, name):
    node = compose(name, tmp_path).dataset
    assert node.cache is False
    assert OmegaConf.to_container(node)["cache_dir"] == "${paths.cache_dir}/preprocessed"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_config_with_cache_on_fills_paths_cache_dir(tmp_path, name):
    folder, writer = WRITERS[name]
    writer(tmp_path / "data" / folder)
    config = compose(name, tmp_path)
    config.dataset.num_workers = 0
    config.dataset.cache = True
    dm = instantiate(config.dataset)
    assert dm.cache.root == tmp_path / "cache" / "preprocessed"
    dm.setup("fit")
    next(iter(dm.val_dataloader()))
    assert entries(tmp_path / "cache" / "preprocessed")


def test_synthetic_config_caches_next_to_the_generated_set(tmp_path):
    config = compose("synthetic", tmp_path)
    assert config.dataset.cache is False
    config.dataset.update(cache=True, n_refs=3, levels=2, generated_size=24)
    dm = instantiate(config.dataset)
    assert dm.cache.root == tmp_path / "cache" / "preprocessed"
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    assert entries(tmp_path / "cache" / "preprocessed")
