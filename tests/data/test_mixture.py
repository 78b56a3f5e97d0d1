import csv
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iqa_lightning.data import (
    InstructDataModule,
    KADIDDataModule,
    SyntheticDataModule,
    SyntheticInstructDataModule,
    TaskMixtureLoader,
)

from . import test_instruct, test_qbench
from .fixtures import write_image, write_kadid

CONF = Path(__file__).resolve().parents[2] / "conf" / "instruct"


# --- the step schedule ------------------------------------------------------------------------


def counting_loaders(sizes):
    return {task: [{"i": torch.tensor(i)} for i in range(size)] for task, size in sizes.items()}


def test_schedule_follows_the_weights():
    loader = TaskMixtureLoader(
        counting_loaders({"instruct": 3, "score": 5}),
        {"instruct": 3.0, "score": 1.0},
        steps=4000,
        seed=1,
    )
    counts = Counter(loader.schedule(0))
    assert abs(counts["instruct"] / 4000 - 0.75) < 0.03
    assert set(counts) == {"instruct", "score"}


def test_schedule_is_deterministic_per_seed_and_epoch():
    def make(seed):
        return TaskMixtureLoader(
            counting_loaders({"instruct": 2, "score": 2}),
            {"instruct": 1, "score": 1},
            steps=64,
            seed=seed,
        )

    a, b = make(0), make(0)
    first = [batch["task"] for batch in a]
    assert first == [batch["task"] for batch in b] == a.schedule(0)
    second = [batch["task"] for batch in a]  # the next iteration is the next epoch
    assert second == a.schedule(1) != first
    assert make(1).schedule(0) != first


def test_short_loaders_cycle_and_batches_carry_the_task():
    loader = TaskMixtureLoader(
        counting_loaders({"instruct": 2, "score": 3}), {"instruct": 1, "score": 1}, steps=40, seed=0
    )
    seen = {"instruct": [], "score": []}
    for batch in loader:
        seen[batch["task"]].append(int(batch["i"]))
    assert len(loader) == 40 and sum(map(len, seen.values())) == 40
    for task, size in (("instruct", 2), ("score", 3)):
        assert seen[task] == [i % size for i in range(len(seen[task]))]


def test_empty_loader_and_mismatched_weights_are_refused():
    with pytest.raises(ValueError, match="differ"):
        TaskMixtureLoader({"instruct": [{}]}, {"score": 1.0}, steps=2)
    with pytest.raises(RuntimeError, match="'score' training loader yields no batches"):
        list(TaskMixtureLoader({"score": []}, {"score": 1.0}, steps=2))


# --- the data module on real-format files -----------------------------------------------------


def write_instruct_data(root):
    """Q-Instruct labels, a Q-Bench folder (val and test) and a KADID set under ``root``."""
    labels = test_instruct.write_set(root / "qinstruct")
    qbench = root / "qbench"
    test_qbench.write_set(qbench, name="qbench_val.json")
    records = test_qbench.llvisionqa_records()[:3]
    (qbench / "qbench_test.json").write_text(json.dumps(records))
    return labels, qbench, write_kadid(root / "kadid", n_refs=10, n_types=1, n_levels=3)


def make_score(root, **kwargs):
    kwargs = {"image_size": 16, "batch_size": 4, "hflip": False, "seed": 3, **kwargs}
    return KADIDDataModule(root=root, **kwargs)


@pytest.fixture
def files(tmp_path):
    return write_instruct_data(tmp_path)


def make(files, score=True, **kwargs):
    labels, qbench, kadid = files
    kwargs = {"image_size": 16, "batch_size": 2, "eval_batch_size": 3, "seed": 5, **kwargs}
    return InstructDataModule(
        qinstruct_json=labels,
        qbench_dir=qbench,
        qbench_image_root=qbench / "images",
        score_datamodule=make_score(kadid) if score else None,
        **kwargs,
    )


def test_training_batches_mix_both_tasks_and_keep_score_batches_unchanged(files):
    dm = make(files, mixture={"instruct": 1.0, "score": 2.0}, steps_per_epoch=30)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    tasks = Counter(batch["task"] for batch in batches)
    assert len(batches) == 30 and tasks["instruct"] > 0 and tasks["score"] > tasks["instruct"]
    instruct = [b for b in batches if b["task"] == "instruct"]
    assert set(instruct[0]) == {"pixels", "turns", "record_id", "task"}
    assert instruct[0]["pixels"].shape == (2, 3, 16, 16)
    score = [b for b in batches if b["task"] == "score"]
    reference = make_score(files[2])
    reference.setup("fit")
    loader = reference.train_dataloader()
    expected = [batch for _ in range(len(score) // len(loader) + 1) for batch in loader]
    for got, want in zip(score, expected, strict=False):
        assert set(got) == set(want) | {"task"}
        assert got["image_id"] == want["image_id"]
        assert torch.equal(got["pixels"], want["pixels"])
        assert torch.equal(got["target"], want["target"])


def test_prepare_records_reads_every_file_before_a_model_exists(files, tmp_path):
    dm = make(files)
    counts = dm.prepare_records()
    assert counts["instruct"] == 3 and counts["mcq_val"] == len(dm.questions["val"]) > 0
    assert {k: v for k, v in counts.items() if k.startswith("score_")} == {
        "score_train": 21,
        "score_val": 3,
        "score_test": 6,
    }
    labels, qbench, _ = files
    broken = InstructDataModule(
        qinstruct_json=labels,
        qbench_dir=qbench,
        qbench_image_root=qbench / "images",
        score_datamodule=make_score(tmp_path / "no_kadid_here"),
    )
    with pytest.raises(FileNotFoundError, match="no_kadid_here"):
        broken.prepare_records()


def test_default_mixture_and_steps(files):
    dm = make(files)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.tasks == ["instruct", "score"] and loader.probabilities == [0.5, 0.5]
    score_batches = len(dm.score_datamodule.train_dataloader())
    assert len(loader) == 2 + score_batches  # 3 conversations in batches of 2, plus the score
    alone = make(files, score=False)
    alone.setup("fit")
    assert alone.train_dataloader().tasks == ["instruct"]
    assert {b["task"] for b in alone.train_dataloader()} == {"instruct"}


def test_eval_loaders_follow_eval_tasks(files):
    dm = make(files)
    dm.setup("fit")
    dm.setup("test")
    assert dm.eval_tasks == ["mcq", "score"]
    val, test = dm.val_dataloader(), dm.test_dataloader()
    assert len(val) == len(test) == 2
    mcq = next(iter(val[0]))
    assert set(mcq) == {
        "pixels",
        "prompt",
        "letters",
        "answer_index",
        "type",
        "concern",
        "record_id",
        "answer_by",
        "max_new_tokens",
    }
    assert mcq["pixels"].shape == (3, 3, 16, 16) and len(val[0].dataset) == 4
    assert len(test[0].dataset) == 3
    score = next(iter(val[1]))
    assert set(score) == {"pixels", "target", "mos_raw", "image_id", "target_std"}  # KADID's var
    alone = make(files, score=False)
    alone.setup("validate")
    assert alone.eval_tasks == ["mcq"] and len(alone.val_dataloader()) == 1


def test_test_questions_fall_back_to_val_and_train_questions_become_conversations(files):
    labels, qbench, kadid = files
    (qbench / "qbench_test.json").unlink()
    (qbench / "qbench_train.json").write_text(json.dumps(test_qbench.llvisionqa_records()))
    dm = make(files, score=False)
    dm.setup()
    assert dm.qbench_file("test") == qbench / "qbench_val.json"
    assert dm.questions["test"] == dm.questions["val"]
    assert len(dm.conversations) == 3 + 4
    mcq_turn = dm.conversations[3].turns[0]
    assert mcq_turn[0].startswith("Is the image clear?\nA. Yes\nB. No") and mcq_turn[1] == "B"


def test_mixture_arguments_are_checked(files):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['caption'\]"):
        make(files, mixture={"caption": 1.0})
    with pytest.raises(ValueError, match="'score' must be a number >= 0"):
        make(files, mixture={"instruct": 1.0, "score": -1})
    with pytest.raises(ValueError, match="all be zero"):
        make(files, mixture={"instruct": 0.0})
    with pytest.raises(ValueError, match="no score_datamodule"):
        make(files, score=False, mixture={"instruct": 1.0, "score": 1.0})
    with pytest.raises(TypeError, match="IQADataModule"):
        InstructDataModule(qinstruct_json=files[0], score_datamodule=object())
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make(files, steps_per_epoch=0)


def test_skip_mode_counts_and_files(files, tmp_path):
    labels, qbench, kadid = files
    (labels.parent / "livefb_liveitw_aigc" / "7.png").unlink()
    (qbench / "images" / "00080.jpg").unlink()
    (kadid / "images" / "I01_01_01.png").unlink()
    with pytest.raises(FileNotFoundError, match="livefb-7"):
        make(files).setup("fit")
    dm = make(files, on_bad_image="skip")
    dm.score_datamodule.on_bad_image = "skip"
    dm.setup("fit")
    assert len(dm.conversations) == 2 and len(dm.questions["val"]) == 3
    assert len(dm.skipped) == 3
    path = dm.write_skipped(tmp_path / "skipped.csv")
    rows = list(csv.DictReader(path.open()))
    assert [row["task"] for row in rows] == ["instruct", "mcq_val", "score"]
    assert rows[0]["id"] == "livefb-7" and rows[2]["id"] == "I01_01_01.png"


def test_split_table_delegates_to_the_score_data_module(files, tmp_path):
    dm = make(files)
    dm.setup("fit")
    assert dm.split_table() == dm.score_datamodule.split_table()
    assert dm.write_split(tmp_path).read_text().startswith("image_id,split")
    alone = make(files, score=False)
    alone.setup()
    table = alone.split_table()
    assert ("spaq-00001", "train") in table and ("qbench_val/0", "val") in table


def test_distributed_ranks_share_the_schedule_and_split_the_data(files):
    labels, _, kadid = files  # even sizes, so DistributedSampler pads nothing
    records = test_instruct.qinstruct_records()
    records.append(dict(records[0], id="spaq-00001-bis"))
    labels.write_text(json.dumps(records))
    write_kadid(kadid, n_refs=10, n_types=1, n_levels=2)
    (kadid / "images" / "I01_01_03.png").unlink()
    loaders = []
    for rank in (0, 1):
        dm = make(files, mixture={"instruct": 1.0, "score": 1.0}, steps_per_epoch=12)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=4)
        dm.setup("fit")
        loaders.append(dm.train_dataloader())
    runs = [list(loader) for loader in loaders]
    assert [b["task"] for b in runs[0]] == [b["task"] for b in runs[1]] == loaders[0].schedule(4)
    for task, key in (("instruct", "record_id"), ("score", "image_id")):
        ids = [{i for b in run if b["task"] == task for i in b[key]} for run in runs]
        assert ids[0] and ids[1] and not ids[0] & ids[1], task


# --- with a Trainer, and from the configs -----------------------------------------------------


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.tasks: dict[int, list[str]] = {}
        self.eval_seen: set = set()

    def training_step(self, batch, batch_idx):
        self.tasks.setdefault(self.current_epoch, []).append(batch["task"])
        return (self.weight - batch["pixels"].mean()) ** 2

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        task = self.trainer.datamodule.eval_tasks[dataloader_idx]
        self.eval_seen.add((task, "prompt" in batch, "target" in batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_runs_one_task_per_step_with_the_epoch_schedule(files):
    dm = make(files, steps_per_epoch=6)
    model = Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    loader = dm.train_dataloader()
    assert model.tasks == {0: loader.schedule(0), 1: loader.schedule(1)}
    assert model.eval_seen == {("mcq", True, False), ("score", False, True)}


def compose(name, tmp_path):
    config = OmegaConf.create(
        {
            "paths": {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
            "model": {"image_size": 16},
            "seed": 7,
        }
    )
    config.instruct = OmegaConf.load(CONF / f"{name}.yaml")
    return config


def test_every_instruct_config_is_tested():
    assert {p.stem for p in CONF.glob("*.yaml")} == {"synthetic", "qinstruct", "learning"}


def test_learning_config_reads_the_learning_sets_conversations(tmp_path):
    from hydra import compose as compose_train
    from hydra import initialize_config_dir

    from iqa_lightning.data import LearningDataModule

    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose_train(
            "train", ["dataset=learning", "instruct=learning", f"paths.cache_dir={tmp_path}",
                      "dataset.train_images=6", "dataset.val_images=4", "dataset.test_images=4",
                      "model=tiny_llava_trained"],
        )  # fmt: skip
    score = instantiate(cfg.dataset)
    assert isinstance(score, LearningDataModule)
    score.prepare_data()
    dm = instantiate(cfg.instruct, score_datamodule=score)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["task"] in ("instruct", "score")
    assert str(cfg.instruct.qinstruct_json).startswith(str(score.folder))


def test_synthetic_config_shares_the_score_set_and_its_reference_split(tmp_path):
    config = compose("synthetic", tmp_path)
    assert config.instruct.num_workers == 0 and config.instruct.score_datamodule is None
    score = SyntheticDataModule(
        cache_dir=tmp_path / "cache", n_refs=5, generated_size=24, levels=2, image_size=16, seed=1
    )
    dm = instantiate(config.instruct, score_datamodule=score)
    assert isinstance(dm, SyntheticInstructDataModule)
    assert dm.kadid_root == score.root and dm.seed == 7 and dm.image_size == 16
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    score_refs = {}
    for image_id, split in score.split_table():
        score_refs.setdefault(split, set()).add(image_id[:3])
    for split in ("val", "test"):
        refs = {q.image_path.name[:3] for q in dm.questions[split] if "pair" not in q.record_id}
        assert refs == score_refs[split]
    conversation_refs = {c.image_path.name[:3] for c in dm.conversations}
    assert conversation_refs == score_refs["train"]
    assert {b["task"] for b in dm.train_dataloader()} == {"instruct", "score"}


def test_synthetic_config_alone_generates_its_own_set(tmp_path):
    config = compose("synthetic", tmp_path)
    config.instruct.update(n_refs=3, generated_size=16, levels=2)
    dm = instantiate(config.instruct)
    dm.setup("fit")  # generates the sets when prepare_data was not called
    assert dm.kadid_root.parent == tmp_path / "cache"
    assert dm.eval_tasks == ["mcq"] and len(dm.conversations) > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["task"] == "instruct" and batch["pixels"].shape[1:] == (3, 16, 16)


def test_qinstruct_config_reads_the_real_layout(tmp_path):
    config = compose("qinstruct", tmp_path)
    data = tmp_path / "data"
    labels = test_instruct.write_set(data / "q-instruct")
    labels.rename(data / "q-instruct" / "cleaned_labels.json")
    test_qbench.write_set(data / "q-bench", name="llvisionqa_dev.json")
    test_qbench.write_set(data / "q-bench", name="llvisionqa_test.json")
    write_image(data / "unused.png")
    config.instruct.num_workers = 0
    dm = instantiate(config.instruct)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.conversations) == 3 and len(dm.questions["test"]) == 4
    # val on the dev file, test on the test file (Q-Align's --split test), answered by generation
    assert dm.questions["test"][0].record_id.startswith("llvisionqa_test/")
    assert dm.questions["val"][0].record_id.startswith("llvisionqa_dev/")
    assert dm.mcq_answer == "generate" and dm.mcq_max_new_tokens == 512
    assert next(iter(dm.test_dataloader()[0]))["pixels"].shape[1:] == (3, 16, 16)
