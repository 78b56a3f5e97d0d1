"""dataset=mix: KonIQ-10k, SPAQ and KADID-10k in their published layouts, each read by its own
data module, trained together; per-dataset figures and the combined early-stopping metric."""

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import pearsonr, spearmanr

from iqa_lightning.data import KADIDDataModule, KonIQDataModule, SPAQDataModule
from iqa_lightning.data.mix import MixDataModule
from iqa_lightning.errors import ConfigError
from iqa_lightning.eval import correlations
from iqa_lightning.metrics import correlation_metrics
from iqa_lightning.train import CONFIG_DIR
from tests.data.fixtures import write_kadid, write_koniq
from tests.data.fixtures_more import write_spaq
from tests.training import train_in_process

FOLDERS = {"koniq": "koniq10k", "spaq": "SPAQ", "kadid": "kadid10k"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix_data")
    write_koniq(base / "koniq10k", n_images=20)
    write_spaq(base / "SPAQ", n_images=20)
    write_kadid(base / "kadid10k", n_refs=4)
    return base


def mix_config(data_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=["model=tiny_llava", "dataset=mix", f"paths.data_dir={data_dir}", *overrides],
        )


def test_each_dataset_is_read_and_split_by_its_own_module_on_one_range(data_dir, tmp_path):
    cfg = mix_config(data_dir, "dataset.weights.kadid=2", f"dataset.roots.spaq={data_dir}/SPAQ")
    mix = instantiate(cfg.dataset)
    mix.setup("fit")
    assert isinstance(mix, MixDataModule) and mix.names == ["koniq", "spaq", "kadid"]
    members = {
        "koniq": KonIQDataModule(data_dir / "koniq10k", seed=cfg.seed),
        "spaq": SPAQDataModule(data_dir / "SPAQ", seed=cfg.seed),
        "kadid": KADIDDataModule(data_dir / "kadid10k", seed=cfg.seed),
    }
    mixed = dict(mix.split_table())
    for name, member in members.items():
        member.setup("fit")
        # the dataset's own split, image for image, under <dataset>/<image> ids
        assert {f"{name}/{i}": s for i, s in member.split_table()} == {
            k: v for k, v in mixed.items() if k.startswith(f"{name}/")
        }
        scores = [r.mos_raw for r in mix.records() if mix.source_of(r.image_id) == name]
        # observed normalisation: each dataset's lowest..highest score becomes 1..5
        assert min(scores) == pytest.approx(1.0) and max(scores) == pytest.approx(5.0)
        raw = [r.mos_raw for r in member.records()]
        expected = [1 + 4 * (m - min(raw)) / (max(raw) - min(raw)) for m in raw]
        assert scores == pytest.approx(expected)
    assert mix.target_bounds() == pytest.approx((0.0, 1.0))  # level bins: each dataset's own
    counts = {n: m.num_records["train"] for n, m in members.items()}
    train = mix.dataset("train")
    assert len(train) == counts["koniq"] + counts["spaq"] + 2 * counts["kadid"]
    assert train.sources.count("kadid") == 2 * counts["kadid"]
    sample = mix.dataset("val")[0]
    assert sample["dataset"] == "koniq" and sample["image_id"].startswith("koniq/")
    batch = next(iter(mix.val_dataloader()))
    assert set(batch["dataset"]) <= set(mix.names)


def test_declared_normalisation_and_rating_stds_follow_each_dataset(data_dir):
    mix = instantiate(
        mix_config(data_dir, "dataset.datasets=[kadid]", "dataset.normalize=declared").dataset
    )
    mix.setup("fit")
    kadid = KADIDDataModule(data_dir / "kadid10k")
    kadid.setup("fit")
    rows = {f"kadid/{r.image_id}": r for r in kadid.records()}
    for record in mix.records():
        own = rows[record.image_id]
        assert record.mos_raw == pytest.approx(own.mos_raw)  # KADID's 1-5 is the common 1-5
        assert record.mos_std == pytest.approx(own.mos_std)
    item = mix.dataset("test")[0]
    assert float(item["target_std"]) == pytest.approx(0.5 / 4)  # var 0.25 -> std 0.5 on 1-5


@pytest.fixture(scope="module")
def mix_node(data_dir):
    """The mix's composed dataset node (composed once: each case below changes one key)."""
    return mix_config(data_dir).dataset


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("datasets", ["koniq", "nonesuch"], "no dataset option 'nonesuch'"),
        ("datasets", ["koniq", "koniq"], "more than once"),
        ("roots.pipal", "/x", "dataset.roots names ['pipal']"),
        ("weights.koniq", -1, "dataset.weights.koniq=-1"),
        ("options.koniq", {"nonesuch": 1}, "dataset.options.koniq.nonesuch"),
        ("normalize", "zscore", "dataset.normalize must be one of"),
    ],
)
def test_config_mistakes_name_the_key(mix_node, key, value, message):
    node = OmegaConf.create(OmegaConf.to_container(mix_node, resolve=True))
    OmegaConf.update(node, key, value, merge=False)
    with pytest.raises(InstantiationException) as caught:
        instantiate(node)
    cause = caught.value.__cause__  # what the driver prints on its one error line
    assert isinstance(cause, ConfigError) and message in str(cause)


def test_per_dataset_figures_and_their_mean():
    metrics = correlation_metrics("val/")
    rng = np.random.default_rng(0)
    names = ["a"] * 7 + ["b"] * 5
    scores, targets = rng.normal(size=12), rng.normal(size=12)
    for lo, hi in ((0, 5), (5, 12)):  # a batch holding both datasets
        metrics.set_sources({"dataset": names[lo:hi]})
        metrics.update(torch.tensor(scores[lo:hi]), torch.tensor(targets[lo:hi]))
    values = {k: float(v) for k, v in metrics.compute().items()}
    for name, part in (("a", slice(0, 7)), ("b", slice(7, 12))):
        assert values[f"val/{name}/srcc"] == pytest.approx(
            spearmanr(scores[part], targets[part])[0]
        )
        assert values[f"val/{name}/plcc"] == pytest.approx(pearsonr(scores[part], targets[part])[0])
    assert values["val/srcc"] == pytest.approx((values["val/a/srcc"] + values["val/b/srcc"]) / 2)
    assert values["val/pooled/srcc"] == pytest.approx(spearmanr(scores, targets)[0])
    metrics.reset()
    metrics.set_sources({"pixels": None})  # a single-dataset batch: the plain figures
    metrics.update(torch.tensor(scores), torch.tensor(targets))
    assert set(metrics.compute()) == {"val/srcc", "val/plcc", "val/krcc"}


def _train_mix(data_dir, out, cache_dir, *extra):
    return train_in_process(
        ["experiment=smoke", "dataset=mix", f"paths.data_dir={data_dir}", *extra], out, cache_dir
    )


def _check_run(metrics, out):
    names = ("koniq", "spaq", "kadid")
    for stage in ("val", "test"):
        for name in names:
            assert f"{stage}/{name}/srcc" in metrics and f"{stage}/{name}/plcc" in metrics
        mean = np.mean(
            [(metrics[f"{stage}/{n}/srcc"] + metrics[f"{stage}/{n}/plcc"]) / 2 for n in names]
        )
        assert metrics[f"{stage}/srcc_plcc"] == pytest.approx(mean)  # the early-stopping metric
    rows = (out / "predictions_test.csv").read_text().splitlines()[1:]
    assert {row.split("/", 1)[0] for row in rows} == set(names)
    return rows


def test_one_step_of_mix3_trains_on_three_data_modules(data_dir, tmp_path, cache_dir):
    out = tmp_path / "run"
    metrics = _train_mix(
        data_dir, out, cache_dir, "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
        "callbacks.plots=null",  # no plots: the mixing is what this checks
    )  # fmt: skip
    _check_run(metrics, out)


@pytest.mark.slow  # several epochs; test_one_step_of_mix3_trains_on_three_data_modules is the same path
def test_mix3_run_per_dataset_test_figures_equal_eval_of_each_dataset(
    data_dir, tmp_path, cache_dir
):
    out = tmp_path / "run"
    metrics = _train_mix(
        data_dir, out, cache_dir, "trainer.max_epochs=3", "dataset.weights.kadid=2"
    )
    assert metrics["epochs"] >= 1
    rows = _check_run(metrics, out)
    by_source = {}
    for row in rows:
        image_id, _, target, score = row.split(",")[:4]
        by_source.setdefault(image_id.split("/", 1)[0], []).append((float(score), float(target)))
    for name, pairs in by_source.items():
        figures = correlations([s for s, _ in pairs], [t for _, t in pairs])
        assert figures["srcc"] == pytest.approx(metrics[f"test/{name}/srcc"], abs=1e-5)
        assert figures["plcc"] == pytest.approx(metrics[f"test/{name}/plcc"], abs=1e-5)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/srcc"] == pytest.approx(
        np.mean([saved[f"test/{n}/srcc"] for n in by_source])
    )


def test_level_words_from_answers_reach_a_mix_from_every_dataset_or_none(tmp_path):
    from iqa_lightning.data import TableDataModule
    from tests.data.fixtures import write_image
    from tests.data.fixtures_files import write_qalign_conversations

    def table(name, levels_from):
        names = [f"{name}/{i}.png" for i in range(10)]
        for i, image in enumerate(names):
            write_image(tmp_path / image, seed=i)
        scores = [1 + 4 * i / 9 for i in range(10)]
        file = write_qalign_conversations(
            tmp_path / f"{name}.json", names, scores, (1, 5), with_score=False
        )
        return TableDataModule(
            file=file, mos_range=[1, 5], image_size=16, levels_from=levels_from, split="random"
        )

    both = MixDataModule({"a": table("a", "answer"), "b": table("b", "answer")}, image_size=16)
    both.setup("fit")
    sample = both.dataset("test")[0]
    source = both.members[sample["dataset"]]
    own = {f"{sample['dataset']}/{r.image_id}": r.level for r in source.records()}
    assert int(sample["target_level"]) == own[sample["image_id"]]
    one = MixDataModule({"a": table("a", "answer"), "b": table("b", None)}, image_size=16)
    with pytest.raises(ConfigError, match=r"\['a'\] give level words .* \['b'\] do not"):
        one.setup("fit")
