"""Videos: Q-Align's 1 fps frame sampling, PyAV decoding, every frame of a video in its one
placeholder of mPLUG-Owl2's prompt, and ``python -m iqa_lightning.score videos=<folder>`` on a
generated 3-second clip scored with the tiny mPLUG-Owl2 checkpoint saved by Q-Align's code."""

import csv
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iqa_lightning.data.video import SameLengthBatches, frame_indices, frames_to_tensor, load_video
from iqa_lightning.errors import ConfigError, ImageLoadError
from iqa_lightning.scorer import compose_scoring, zero_shot_module
from iqa_lightning.video_lists import check_takes_frames, read_videos
from tests.conftest import run_main

av = pytest.importorskip("av")  # the video extra

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mplug_owl2_tiny"
STEP = 6  # grey level added per frame


def write_clip(path: Path, frames: int, fps: Fraction | int, size=(40, 56)) -> Path:
    """An H.264 clip whose frame i is flat grey STEP * i (so a decoded frame tells its index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            array = np.full((*size, 3), STEP * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_frame_indices_are_q_aligns_1_fps_rule():
    assert frame_indices(30, 10.0) == [0, 10, 20]
    assert frame_indices(300, 29.97) == [int(29.97 * i) for i in range(10)]
    assert frame_indices(300, 29.97)[:4] == [0, 29, 59, 89]
    assert frame_indices(40, 12.5) == [0, 12, 25]
    assert frame_indices(5, 10.0) == [0]  # under a second: the first frame
    with pytest.raises(ValueError, match="no frames"):
        frame_indices(0, 10.0)
    with pytest.raises(ValueError, match="frame rate"):
        frame_indices(10, 0.0)


def test_a_clip_decodes_to_its_sampled_frames_in_order(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 40, Fraction(25, 2))  # 3.2 s at 12.5 fps
    frames, indices = load_video(clip)
    assert indices == [0, 12, 25]
    greys = [float(np.asarray(f).mean()) for f in frames]
    assert greys == pytest.approx([STEP * i for i in indices], abs=3)
    pixels = frames_to_tensor(frames, 16, "pad_square")
    assert pixels.shape == (3, 3, 16, 16) and pixels.dtype == torch.float32


def test_a_corrupt_video_is_one_line_naming_it(tmp_path):
    good = write_clip(tmp_path / "good.mp4", 10, 10)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError) as caught:
        load_video(broken)
    message = str(caught.value)
    assert f"cannot load video '{broken}'" in message and "\n" not in message


def test_videos_of_one_length_share_a_batch():
    batches = list(SameLengthBatches([3, 8, 3, 3, 8], batch_size=2))
    assert batches == [[0, 2], [3], [1, 4]]


def test_lists_and_models_that_take_no_frames(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,mos\na.mp4,3.5\n")
    listed = read_videos(tmp_path / "list.csv")
    assert listed.paths == [tmp_path / "a.mp4"] and listed.mos == [3.5]
    with pytest.raises(ConfigError, match="no video files"):
        read_videos(_empty(tmp_path))
    llava = SimpleNamespace(module=SimpleNamespace(backbone=SimpleNamespace(family="llava")))
    with pytest.raises(ConfigError, match="llava model cannot take a video's frames"):
        check_takes_frames(llava)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _vqa(tmp_path, *more):
    return ["model=q_align_vqa", f"model.pretrained={FIXTURE}", "model.dtype=float32",
            "model.image_size=64", "trainer=cpu", f"paths.output_dir={tmp_path}", *more]  # fmt: skip


def test_score_cli_scores_a_generated_3_second_clip(tmp_path, capsys, monkeypatch):
    videos = tmp_path / "videos"
    clip = write_clip(videos / "clip.mp4", 30, 10)  # 3 s at 10 fps: frames 0, 10, 20
    (videos / "broken.mp4").write_bytes(clip.read_bytes()[:300])
    out = tmp_path / "scores.csv"
    ended = run_main("iqa_lightning.score", [f"videos={videos}", *_vqa(tmp_path), f"out={out}"],
                     capsys)  # fmt: skip
    assert ended.code == 0, ended.err[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["clip.mp4"]
    skipped = list(csv.DictReader((tmp_path / "scores_skipped.csv").open()))
    assert [r["image"] for r in skipped] == ["broken.mp4"] and skipped[0]["reason"]
    assert "broken.mp4: " in ended.out

    # The same score from the module on the three sampled frames in one prompt (Q-Align's video
    # scorer: one placeholder, every frame's tokens in order), not from any one frame.
    module = zero_shot_module(compose_scoring(_vqa(tmp_path, "videos=x")))
    frames, indices = load_video(clip)
    assert indices == [0, 10, 20]
    pixels = frames_to_tensor(frames, 64, "pad_square")
    with torch.no_grad():
        video = module.score_batch({"pixels": pixels[None]})
        reversed_ = module.score_batch({"pixels": pixels.flip(0)[None]})
        one_frame = module.score_batch({"pixels": pixels[:1][None]})
        image = module.score_batch({"pixels": pixels[:1]})
    assert float(rows[0]["score"]) == pytest.approx(float(video), abs=1e-6)
    assert float(video) != pytest.approx(float(reversed_), abs=1e-7)
    torch.testing.assert_close(one_frame, image)  # one frame scores as that image
    assert module.scorer.head.question == "How would you rate the quality of this video?"
