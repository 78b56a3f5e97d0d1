from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iqa_lightning.data import ImageCheckError, IQADataModule

from .fixtures import write_agiqa, write_image, write_kadid, write_koniq
from .fixtures_files import write_qalign_scores, write_split_csv
from .fixtures_more import (
    write_clive,
    write_csiq,
    write_live,
    write_pipal,
    write_pyiqa_koniq,
    write_spaq,
    write_tid2013,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
WRITERS = {
    "kadid": ("kadid10k", write_kadid),
    "koniq": ("koniq10k", write_koniq),
    "agiqa": ("AGIQA-3K", write_agiqa),
    "live": ("LIVEIQA_release2", write_live),
    "csiq": ("CSIQ", write_csiq),
    "tid2013": ("tid2013", write_tid2013),
    "clive": ("LIVEC", write_clive),
    "spaq": ("SPAQ", write_spaq),
    "pipal": ("PIPAL", write_pipal),
}
#: The same datasets in pyiqa's layout (meta-info file in data/meta_info/).
PYIQA_WRITERS = {
    "koniq": write_pyiqa_koniq,
    "live": lambda root: write_live(root, layout="pyiqa"),
    "clive": lambda root: write_clive(root, layout="pyiqa"),
}


#: The dataset options (``_``-prefixed files are bases they pull in, not options).
OPTIONS = sorted(p.stem for p in CONF.glob("[!_]*.yaml"))


def compose(name, tmp_path):
    """The dataset option composed by Hydra (its ``defaults`` applied) under a tiny root."""
    with initialize_config_dir(str(CONF.parent), version_base="1.3"):
        dataset = hydra_compose(config_name=f"dataset/{name}").dataset
    config = OmegaConf.create(
        {
            "paths": {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
            "model": {"image_size": 24},
            "seed": 5,
        }
    )
    config.dataset = dataset
    return config


def test_every_dataset_config_is_tested():
    # mix: several of these at once (tests/test_mix.py); ava: tests/data/test_ava.py;
    # konvid, lsvq (videos): tests/data/test_video_datasets.py
    assert set(OPTIONS) == {*WRITERS, "synthetic", "table", "learning", "mix", "ava", "konvid",
                            "lsvq"}  # fmt: skip


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_pulls_in_the_shared_loader_settings(tmp_path, name):
    own = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    loader = OmegaConf.to_container(OmegaConf.load(CONF / "_loader.yaml"))
    assert own.pop("defaults") == ["_loader", "_self_"]
    composed = OmegaConf.to_container(compose(name, tmp_path).dataset)
    assert composed == {**loader, **own}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_config_builds_a_working_data_module(tmp_path, name):
    folder, writer = WRITERS[name]
    writer(tmp_path / "data" / folder)
    config = compose(name, tmp_path)
    config.dataset.num_workers = 0
    dm = instantiate(config.dataset)
    assert isinstance(dm, IQADataModule)
    assert dm.image_size == 24 and dm.seed == 5 and dm.name == config.dataset.name
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 24, 24)


@pytest.mark.parametrize("name", sorted(PYIQA_WRITERS))
def test_config_reads_the_pyiqa_layout(tmp_path, name):
    PYIQA_WRITERS[name](tmp_path / "data" / WRITERS[name][0])
    config = compose(name, tmp_path)
    config.dataset.num_workers = 0
    dm = instantiate(config.dataset)
    dm.setup("fit")
    assert dm.resolved_layout == "pyiqa" and sum(dm.num_records.values()) in (30, 50)


def test_config_selects_a_pyiqa_split_file(tmp_path):
    write_live(tmp_path / "data" / "LIVEIQA_release2", layout="pyiqa")
    config = compose("live", tmp_path)
    config.dataset.update(num_workers=0, split="pyiqa", split_file="live_123.pkl", split_index=2)
    dm = instantiate(config.dataset)
    dm.setup("fit")
    assert {s for _, s in dm.split_table()} == {"train", "val", "test"}


def test_synthetic_config(tmp_path):
    config = compose("synthetic", tmp_path)
    assert config.dataset.num_workers == 0
    config.dataset.n_refs = 3
    config.dataset.levels = 2
    config.dataset.generated_size = 24
    dm = instantiate(config.dataset)
    assert dm.root.parent == tmp_path / "cache"
    dm.setup("fit")
    assert sum(dm.num_records.values()) == 3 * 7 * 2


def test_missing_root_from_config_names_the_key(tmp_path):
    dm = instantiate(compose("kadid", tmp_path).dataset)
    with pytest.raises(FileNotFoundError, match=r"dataset\.root"):
        dm.setup("fit")


@pytest.mark.parametrize("name,labels", [("kadid", "dmos.csv"), ("agiqa", "data.csv")])
def test_config_selects_a_split_file(tmp_path, name, labels):
    folder, writer = WRITERS[name]
    root = writer(tmp_path / "data" / folder)
    split_file = write_split_csv(root / labels, tmp_path / f"split_{name}.csv")
    config = compose(name, tmp_path)
    config.dataset.update(num_workers=0, split="column", split_file=str(split_file))
    dm = instantiate(config.dataset)
    dm.setup("fit")
    assert dm.split == "column" and len(dm.split_table()) == sum(dm.num_records.values())
    assert {s for _, s in dm.split_table()} == {"train", "val", "test"}


@pytest.mark.parametrize("name", OPTIONS)
def test_every_config_has_the_loader_checks(tmp_path, name):
    dataset = compose(name, tmp_path).dataset
    assert dataset.check_images == "off"  # a string: unquoted YAML `off` would be False
    assert dataset.on_bad_image == "error"


def test_config_runs_the_full_image_check(tmp_path):
    root = write_kadid(tmp_path / "data" / "kadid10k")
    (root / "images" / "I02_01_02.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config = compose("kadid", tmp_path)
    config.dataset.update(num_workers=0, check_images="full")
    dm = instantiate(config.dataset)
    with pytest.raises(ImageCheckError, match="I02_01_02.png"):
        dm.prepare_records()
    assert list((tmp_path / "cache" / "preprocessed" / "image_checks").glob("kadid-full-*.json"))


def test_table_config_reads_a_qalign_score_list(tmp_path):
    names = [f"agiqa3k/AttnGAN_normal_{i:03d}.jpg" for i in range(20)]
    for i, name in enumerate(names):
        write_image(tmp_path / "qalign" / name, seed=i)
    scores = [0.5 + 4 * i / 19 for i in range(20)]
    file = write_qalign_scores(tmp_path / "qalign" / "agi.json", names, scores, as_text=True)
    config = compose("table", tmp_path)
    assert OmegaConf.is_missing(config.dataset, "file")
    config.dataset.update(num_workers=0, file=str(file))
    dm = instantiate(config.dataset)
    assert dm.higher_better and dm.check_images == "off"
    counts = dm.prepare_records()
    assert sum(counts.values()) == 20 and dm.split == "random" and dm.mos_range == (0.5, 4.5)
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 24, 24)
