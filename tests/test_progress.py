"""Progress of long work: periodic count / rate / ETA lines through logging (a log file gets
them), a final line, and the Lightning callback that puts training progress in train.log."""

import logging
import re

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from iqa_lightning.callbacks import ProgressLog
from iqa_lightning.progress import Progress, current, format_duration, track

LINE = re.compile(
    r"^(?P<what>.+): (?P<count>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
    r"(?P<rate>[\d.]+)/s, ETA (?P<eta>[\dhms]+)"
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog, name="iqa_lightning.progress"):
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_periodic_lines_give_count_rate_and_eta(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    with Progress("teacher texts", total=480, unit="images", every=10, bar=False,
                  clock=clock) as progress:  # fmt: skip
        for _ in range(12):  # 40 images every 4 s: 10 images/s
            clock.now += 4
            progress.update(40)
    lines = messages(caplog)
    # at most one line per 10 s: after 12, 24, 36, 48 s (updates every 4 s), then the final one
    assert lines == [
        "teacher texts: 120/480 images (25%), 10/s, ETA 36s",
        "teacher texts: 240/480 images (50%), 10/s, ETA 24s",
        "teacher texts: 360/480 images (75%), 10/s, ETA 12s",
        "teacher texts: 480/480 images (100%), 10/s, ETA 0s",
        "teacher texts: 480/480 images in 48s (10/s)",
    ]


def test_tiny_interval_logs_every_update_and_a_final_line(caplog):
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    done = list(track(range(5), "analysis instability", unit="images", every=0, bar=False))
    assert done == [0, 1, 2, 3, 4]
    lines = messages(caplog)
    assert len(lines) == 6, lines
    for k, line in enumerate(lines[:5], start=1):
        match = LINE.match(line)
        assert match, line
        assert match["what"] == "analysis instability" and match["unit"] == "images"
        assert (int(match["count"]), int(match["total"])) == (k, 5)
        assert int(match["pct"]) == round(100 * k / 5)
        assert float(match["rate"]) > 0
    assert re.fullmatch(r"analysis instability: 5/5 images in \d+s \([\d.]+/s\)", lines[-1])


def test_work_that_stops_early_says_so_and_unknown_totals_have_no_eta(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    with pytest.raises(KeyboardInterrupt):
        with Progress("scoring", total=100, unit="images", every=0, bar=False, clock=clock) as p:
            clock.now += 2
            p.update(8)
            raise KeyboardInterrupt
    with Progress("image cache", unit="entries", every=0, bar=False, final=False,
                  clock=clock) as p:  # fmt: skip
        clock.now += 4
        p.update(20)
    assert messages(caplog) == [
        "scoring: 8/100 images (8%), 4.0/s, ETA 23s",
        "scoring: stopped at 8/100 images after 2s (4.0/s)",
        "image cache: 20 entries, 5.0/s",
    ]


def test_inner_steps_advance_the_active_progress_and_a_note_is_appended(caplog):
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    assert current().update(3) is None  # nothing active: a no-op
    with Progress("analysis", total=4, unit="images", every=0, bar=False,
                  note=lambda: "loss 0.5") as progress:  # fmt: skip
        for _ in range(4):
            current().update(0.5)  # half a batch of 1 image, twice
            current().update(0.5)
        progress.goto(4)  # settles at the exact count (never back)
        progress.goto(3)
    assert progress.count == 4
    lines = messages(caplog)
    assert lines[0].startswith("analysis: 0.5/4 images (12%)") and lines[0].endswith(", loss 0.5")
    assert lines[-1].startswith("analysis: 4/4 images in") and lines[-1].endswith("loss 0.5")


def test_disabled_progress_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    with Progress("rank 1", total=3, every=0, enabled=False) as p:
        p.update(3)
    assert messages(caplog) == []


def test_durations():
    assert [format_duration(s) for s in (0.4, 45, 116, 3725, float("inf"))] == [
        "0s", "45s", "1m56s", "1h02m", "?",
    ]  # fmt: skip


class TinyRegression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_logs_each_loop_with_loss_in_a_short_fit(caplog, tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, generator=generator), torch.rand(())) for _ in range(12)]
    loader = DataLoader(data, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
        limit_val_batches=2, callbacks=[ProgressLog(every=0)], default_root_dir=tmp_path,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="iqa_lightning")
    trainer.fit(TinyRegression(), loader, loader)
    trainer.test(TinyRegression(), loader)
    lines = messages(caplog)
    steps = [line for line in lines if line.startswith("epoch 0 train: ")]
    assert len(steps) == 7, lines  # one per step at every=0, then the epoch's final line
    first = re.match(r"epoch 0 train: 1/6 steps \(17%\), [\d.]+/s, ETA \d+s, loss ([\d.e-]+)$",
                     steps[0])  # fmt: skip
    assert first, steps[0]
    assert re.fullmatch(r"epoch 0 train: 6/6 steps in \d+s \([\d.]+/s\), loss [\d.e-]+", steps[-1])
    assert any(line.startswith("epoch 1 train: 6/6 steps in") for line in lines)
    assert [line for line in lines if "validation" in line and " in " in line][0].startswith(
        "epoch 0 validation: 2/2 batches in"
    )  # the sanity check is not reported
    assert sum("validation: 1/2" in line for line in lines) == 2  # epochs 0 and 1 only
    assert any(line.startswith("test: 6/6 batches in") for line in lines)


def counts(lines, what):
    return [int(m["count"]) for m in map(LINE.match, lines) if m and m["what"] == what]


def test_described_instability_counts_images_per_sampled_answer(caplog, monkeypatch):
    """Two batches of 2 images, 2 sampled answers each: the count moves per answer (1, 2, 3, 4
    images), not per batch (2, 4)."""
    from torch.utils.data import Dataset

    from iqa_lightning.analysis import analysis_trainer, collect, instability
    from iqa_lightning.models.backbones import build_tiny_llava
    from iqa_lightning.models.prompts import NoPrompt
    from iqa_lightning.models.score import WordScore
    from iqa_lightning.perception import DescriptionScorer, SyntheticDescriptions

    class Images(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            pixels = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i))
            return {"pixels": pixels, "image_id": f"I01_01_0{i + 1}.png"}

    class Run(torch.nn.Module):
        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

    torch.manual_seed(0)
    score = WordScore(["excellent", "good", "fair", "poor", "bad"], [1.0, 0.75, 0.5, 0.25, 0])
    scorer = DescriptionScorer(build_tiny_llava(), NoPrompt(), score, SyntheticDescriptions(5),
                               max_new_tokens=2)  # fmt: skip
    monkeypatch.setenv("IQA_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="iqa_lightning.progress")
    options = {"samples": 2, "temperature": 1.0, "seed": 0, "max_new_tokens": 2}
    batches = collect(analysis_trainer(accelerator="cpu"), Run(scorer).eval(),
                      DataLoader(Images(), batch_size=2), instability.compute, options,
                      what="analysis instability")  # fmt: skip
    assert len(batches) == 2
    lines = messages(caplog)
    assert counts(lines, "analysis instability") == [1, 2, 3, 4]
    assert re.fullmatch(r"analysis instability: 4/4 images in \d+s \([\d.]+/s\)", lines[-1])


def test_teacher_texts_report_their_progress(caplog, monkeypatch, tmp_path):
    import numpy as np
    from PIL import Image

    from iqa_lightning.data.dataset import LabelledImage
    from iqa_lightning.distill.teacher import Teacher, generate_texts
    from iqa_lightning.distill.texts import TextCache

    items = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(path)
        items.append(LabelledImage(f"{i}.png", str(path), 3.0, 0.5))
    cache = TextCache(tmp_path / "texts.jsonl")
    cache.add({"0.png": "cached already"})
    teacher = Teacher(lambda pixels, questions: ["sharp"] * len(questions), 16, "test teacher")
    monkeypatch.setenv("IQA_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="iqa_lightning")
    texts = generate_texts(teacher, items, cache, batch_size=2)
    assert texts["0.png"] == "cached already" and texts["4.png"] == "sharp"
    lines = messages(caplog, "iqa_lightning.distill.teacher")
    assert counts(lines, "teacher texts") == [2, 4]
    assert lines[-1].startswith("teacher texts: 4/4 images in")


def test_image_check_and_cache_fill_report_their_progress(caplog, monkeypatch, tmp_path):
    import pickle

    import numpy as np
    from PIL import Image

    from iqa_lightning.data import ImageCache
    from iqa_lightning.data.checks import check_image_files

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(paths[-1])
    monkeypatch.setenv("IQA_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="iqa_lightning")
    assert check_image_files(paths, "full", workers=2) == ["", "", ""]
    lines = messages(caplog, "iqa_lightning.data")
    assert counts(lines, "image check (full)") == [1, 2, 3]
    assert "3 checked now" in lines[-1]  # the summary is the final line

    cache = ImageCache(tmp_path / "cache", 16)
    for path in [*paths, paths[0]]:  # the fourth is read back: not a new entry
        cache.load(path)
    lines = [line for line in messages(caplog, "iqa_lightning.data") if "image cache" in line]
    assert [line.split(",")[0] for line in lines] == [
        f"image cache 16px-bicubic: {n} new entries" for n in (1, 2, 3)
    ]
    copy = pickle.loads(pickle.dumps(cache))  # a DataLoader worker counts its own entries
    assert copy._filled is None and cache._filled.count == 3
