"""KoNViD-1k and LSVQ in their published layouts, on generated trees of tiny clips (written with
PyAV here): records, the published LSVQ splits, batches of [B, frames, 3, S, S] pixels of videos
with equal frame counts, bad files named or skipped, and the Hydra options."""

import csv
from functools import cache
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from iqa_lightning.data import (
    AnnotationError,
    ImageCheckError,
    ImageLoadError,
    KoNViDDataModule,
    LSVQDataModule,
)
from iqa_lightning.data.video import SameLengthBatches

from .test_configs import compose

#: Frames Q-Align's 1 fps rule keeps from the fixtures' clips (2 s at 4 fps: frames 0 and 4) ...
FRAMES = 2
#: ... and from the longer clips some fixtures mix in (3 s at 4 fps: 0, 4, 8).
LONG_FRAMES = 3
SIZE = 16


@cache
def _clip(seconds: int, grey: int) -> bytes:
    """An H.264 clip of ``seconds`` s at 4 fps, 16x16, flat ``grey``: its bytes."""
    import io

    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.height = stream.width = SIZE
        stream.pix_fmt = "yuv420p"
        for _ in range(4 * seconds):
            array = np.full((SIZE, SIZE, 3), grey, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def write_clip(path: Path, seconds: int = 2, grey: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_clip(seconds, grey))
    return path


def write_konvid(root: Path, videos: int = 10, long_every: int = 0) -> Path:
    """KoNViD_1k_metadata/KoNViD_1k_attributes.csv (flickr_id, MOS, other attributes) and
    KoNViD_1k_videos/<flickr_id>.mp4; every ``long_every``-th clip lasts 3 s, the others 2."""
    rows = []
    for i in range(videos):
        flickr_id = 3337642103 + 1000 * i
        long = long_every and i % long_every == 0
        write_clip(root / "KoNViD_1k_videos" / f"{flickr_id}.mp4", 3 if long else 2, 40 + 15 * i)
        rows.append([flickr_id, f"{1.2 + 3.6 * i / (videos - 1):.4f}", 0.6, 50 + i, 960, 540])
    labels = root / "KoNViD_1k_metadata" / "KoNViD_1k_attributes.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["flickr_id", "MOS", "SD", "n", "width", "height"])
        writer.writerows(rows)
    return root


LSVQ_HEADER = ["name", "p1", "p2", "p3", "height", "width", "mos_p1", "mos_p2", "mos_p3", "mos",
               "frame_number", "fn_last_frame"]  # fmt: skip


def write_lsvq(root: Path, train: int = 8, test: int = 3, test_1080p: int = 3) -> Path:
    """labels_train_test.csv (its columns, ``is_test`` True / False) and
    labels_test_1080p.csv, videos at <name>.mp4 under ia-batch1/ and yfcc-batch1/."""

    def rows(count, batch, start, is_test=None):
        out = []
        for i in range(count):
            name = f"{batch}/{start + i}"
            write_clip(root / f"{name}.mp4", 2, 30 + 7 * (start + i) % 200)
            mos = 10.0 + 80.0 * ((start + i) % 17) / 16
            row = [name, 0, 0, 0, SIZE, SIZE, mos, mos, mos, f"{mos:.3f}", 8, 8]
            out.append(row if is_test is None else [*row, is_test])
        return out

    root.mkdir(parents=True, exist_ok=True)
    with (root / "labels_train_test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*LSVQ_HEADER, "is_test"])
        writer.writerows(
            rows(train, "ia-batch1", 0, "False") + rows(test, "yfcc-batch1", 100, "True")
        )
    with (root / "labels_test_1080p.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LSVQ_HEADER)
        writer.writerows(rows(test_1080p, "yfcc-batch2", 200))
    return root


def _module(cls, root, **kwargs):
    return cls(root=root, image_size=SIZE, batch_size=3, num_workers=0, **kwargs)


def test_konvid_reads_the_attributes_file_and_batches_frames(tmp_path):
    root = write_konvid(tmp_path / "KoNViD_1k", long_every=3)
    dm = _module(KoNViDDataModule, root)
    counts = dm.prepare_records()
    assert counts == {"train": 7, "val": 1, "test": 2} and dm.split == "random"
    record = next(r for r in dm.records() if r.image_id == "3337645103.mp4")
    assert record.path == root / "KoNViD_1k_videos" / "3337645103.mp4"
    assert record.mos_raw == pytest.approx(2.4)
    shapes = set()
    for batch in dm.eval_dataloader("all"):
        frames = batch["pixels"].shape[1]
        assert batch["pixels"].shape[2:] == (3, SIZE, SIZE) and batch["pixels"].shape[0] <= 3
        lengths = {3 if i % 3 == 0 else 2 for i, r in enumerate(dm.records())
                   if r.image_id in batch["image_id"]}  # fmt: skip
        assert lengths == {frames}
        shapes.add(frames)
        assert batch["target"].shape == batch["mos_raw"].shape == (len(batch["image_id"]),)
    assert shapes == {FRAMES, LONG_FRAMES}
    grey = next(iter(dm.eval_dataloader("all")))["pixels"][0].mean()
    assert 0.1 < float(grey) < 0.3  # the first clip's flat grey 40 / 255


def test_konvid_mos_file_in_root(tmp_path):
    root = write_konvid(tmp_path / "k", videos=6)
    (root / "KoNViD_1k_metadata" / "KoNViD_1k_attributes.csv").unlink()
    (root / "KoNViD_1k_mos.csv").write_text(
        "flickr_id,mos\n" + "".join(f"{3337642103 + 1000 * i},{1 + i * 0.5}\n" for i in range(6))
    )
    dm = _module(KoNViDDataModule, root)
    dm.prepare_records()
    assert sorted(r.mos_raw for r in dm.records()) == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    (root / "KoNViD_1k_mos.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"KoNViD_1k_attributes\.csv.*KoNViD_1k_mos\.csv"):
        _module(KoNViDDataModule, root).prepare_records()


def test_lsvq_official_splits_and_the_1080p_test_set(tmp_path):
    root = write_lsvq(tmp_path / "LSVQ")
    dm = _module(LSVQDataModule, root)
    assert dm.prepare_records() == {"train": 7, "val": 1, "test": 3}
    assert {r.image_id for r in dm.records("test")} == {f"yfcc-batch1/{i}" for i in (100, 101, 102)}
    assert dm.records("test")[0].path == root / "yfcc-batch1" / "100.mp4"
    hd = _module(LSVQDataModule, root, test_set="test_1080p")
    assert hd.prepare_records() == {"train": 7, "val": 1, "test": 3}
    assert {r.image_id for r in hd.records("test")} == {f"yfcc-batch2/{i}" for i in (200, 201, 202)}
    assert {r.image_id for r in hd.records("val")} == {r.image_id for r in dm.records("val")}
    batch = next(iter(hd.test_dataloader()))
    assert batch["pixels"].shape == (3, FRAMES, 3, SIZE, SIZE)
    assert batch["mos_raw"].tolist() == pytest.approx(
        [float(r.mos_raw) for r in hd.records("test")]
    )
    rand = _module(LSVQDataModule, root, split="random")
    assert sum(rand.prepare_records().values()) == 11
    with pytest.raises(ValueError, match=r"test_set.*'test_4k'"):
        _module(LSVQDataModule, root, test_set="test_4k")


def test_lsvq_bad_is_test_cell_names_file_line_and_column(tmp_path):
    root = write_lsvq(tmp_path / "LSVQ")
    labels = root / "labels_train_test.csv"
    lines = labels.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",maybe"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"labels_train_test\.csv, line 4, column 'is_test'"):
        _module(LSVQDataModule, root).prepare_records()


def test_bad_videos_stop_with_their_names_or_are_skipped_and_counted(tmp_path, caplog):
    root = write_konvid(tmp_path / "k")
    broken = root / "KoNViD_1k_videos" / "3337643103.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    (root / "KoNViD_1k_videos" / "3337644103.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 10 video file\(s\).*3337644103\.mp4"):
        _module(KoNViDDataModule, root).prepare_records()
    write_clip(root / "KoNViD_1k_videos" / "3337644103.mp4")
    with pytest.raises(ImageCheckError, match=r"cannot be read:\n  .*3337643103\.mp4: "):
        _module(KoNViDDataModule, root, check_images="header").prepare_records()
    dm = _module(KoNViDDataModule, root, split_ratios=(0.5, 0.2, 0.3))  # decoded when loaded
    dm.prepare_records()
    with pytest.raises(ImageLoadError, match=r"cannot load video '.*3337643103\.mp4': "):
        for _ in dm.eval_dataloader("all"):
            pass
    skip = _module(KoNViDDataModule, root, on_bad_image="skip")
    assert sum(skip.prepare_records().values()) == 9
    assert [Path(p).name for p, _ in skip.skipped] == ["3337643103.mp4"]
    assert "skipped 1 of 10 video(s)" in caplog.text


def test_training_batches_reshuffle_each_epoch_and_keep_lengths_apart():
    lengths = [2, 3, 2, 2, 3, 2, 3, 2]
    sampler = SameLengthBatches(lengths, 2, generator=torch.Generator().manual_seed(0))
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert all(len({lengths[i] for i in b}) == 1 for b in batches)
        assert len(batches) == len(sampler) == 5
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert list(SameLengthBatches(lengths, 2)) == [[0, 2], [3, 5], [7], [1, 4], [6]]


def test_video_options_refuse_image_only_settings(tmp_path):
    with pytest.raises(ValueError, match=r"KoNViD-1k: dataset\.cache=True does not apply"):
        KoNViDDataModule(root=tmp_path, cache=True)
    with pytest.raises(ValueError, match=r"LSVQ: dataset\.sampler=pairs"):
        LSVQDataModule(root=tmp_path, sampler="pairs")


@pytest.mark.parametrize("name,folder,writer", [("konvid", "KoNViD_1k", write_konvid),
                                                ("lsvq", "LSVQ", write_lsvq)])  # fmt: skip
def test_config_builds_a_working_video_data_module(tmp_path, name, folder, writer):
    writer(tmp_path / "data" / folder)
    config = compose(name, tmp_path)
    config.dataset.num_workers = 0
    dm = instantiate(config.dataset)
    assert dm.image_size == 24 and dm.seed == 5 and dm.name == name
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixels"].shape[1:] == (FRAMES, 3, 24, 24)
