"""python -m iqa_lightning.score never loses work: an unwritable out= fails before any model is
built or image read, the output files are replaced whole or not at all, and folder entries that
are no readable file (dangling symlinks, FIFOs) are listed as skipped, never dropped silently."""

import csv
import logging
import os
import stat

import numpy as np
import pytest
from PIL import Image

from iqa_lightning import score as driver
from iqa_lightning.cli import ConfigError, report_user_errors
from iqa_lightning.score import check_output, read_images, score, write_outputs
from iqa_lightning.scorer import Scores
from tests.test_score_cli import scoring_config


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def folder(tmp_path):
    """One real image, a dangling symlink and a FIFO with image names, and a text file."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(photos / "a.png")
    (photos / "x.png").symlink_to(photos / "gone.png")
    os.mkfifo(photos / "pipe.jpg")
    (photos / "notes.txt").write_text("not an image\n")
    return photos


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a model is built or an image list read."""

    def built(*args, **kwargs):
        raise AssertionError("the model was built before out= was checked")

    monkeypatch.setattr(driver, "build_scorer", built)
    monkeypatch.setattr(driver, "read_images", built)


def test_out_under_a_file_fails_before_anything_is_built(folder, tmp_path, nothing_built, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "scores.csv"
    cfg = scoring_config(tmp_path, f"images={folder}", f"out={out}")
    with pytest.raises(ConfigError, match=f"out={out}: {blocker} is not a folder"):
        score(cfg)
    with pytest.raises(SystemExit) as stop:  # as the CLI reports it: one error line
        report_user_errors(score)(cfg)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: out={out}: {blocker} is not a folder, so {out} cannot be written"
    assert "Traceback" not in "\n".join(err)


def test_out_in_a_folder_that_refuses_files_fails_before_anything_is_built(
    folder, tmp_path, nothing_built, monkeypatch
):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(driver.tempfile, "mkstemp", refuse)  # root may write anywhere
    out = tmp_path / "locked" / "new" / "scores.csv"
    (tmp_path / "locked").mkdir()
    cfg = scoring_config(tmp_path, f"images={folder}", f"out={out}")
    with pytest.raises(ConfigError, match=rf"cannot write in {tmp_path / 'locked'} \(Permission"):
        score(cfg)
    assert not (tmp_path / "locked" / "new").exists(), "nothing is created by the check"


def test_out_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "scores.csv").mkdir()
    with pytest.raises(ConfigError, match="scores.csv is a folder"):
        check_output(tmp_path / "scores.csv")
    (tmp_path / "b_skipped.csv").mkdir()
    with pytest.raises(ConfigError, match="b_skipped.csv is a folder"):
        check_output(tmp_path / "b.csv")
    with pytest.raises(ConfigError, match="give a .csv file"):
        check_output(tmp_path / "b.tsv")
    check_output(tmp_path / "new" / "c.csv")  # a folder to create is fine
    assert set(os.listdir(tmp_path)) == {"scores.csv", "b_skipped.csv"}, "nothing created"


def scores_of(names, values):
    import torch

    return Scores(images=names, scores=torch.tensor(values), skipped=[("bad.png", "truncated")])


def test_outputs_are_replaced_whole_with_an_ordinary_mode(tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    out.write_text("image,score\nold.png,0.5\n")
    images = driver.ImageList([tmp_path / "a.png"], ["a.png"])

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_outputs(out, scores_of(["a.png"], [0.25]), images)
    assert out.read_text() == "image,score\nold.png,0.5\n", "the previous file is whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"], "no temporary left"
    monkeypatch.undo()

    old_mask = os.umask(0o022)
    try:
        write_outputs(out, scores_of(["a.png"], [0.25]), images)
    finally:
        os.umask(old_mask)
    assert read_csv(out) == [{"image": "a.png", "score": "0.25"}]
    assert read_csv(tmp_path / "scores_skipped.csv") == [
        {"image": "bad.png", "reason": "truncated"}
    ]
    for name in ("scores.csv", "scores_skipped.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv", "scores_skipped.csv"]


def test_a_folder_lists_dangling_symlinks_and_other_non_files_as_skipped(folder):
    found = read_images(folder)
    assert found.names == ["a.png"]
    assert found.skipped == [
        ("pipe.jpg", "not a regular file"),
        ("x.png", f"dangling symlink to {folder / 'gone.png'}"),
    ]
    (folder / "a.png").unlink()
    with pytest.raises(ConfigError, match=r"none of the 2 image entries can be read: pipe\.jpg "
                                          r"\(not a regular file\); x\.png \(dangling"):  # fmt: skip
        read_images(folder)


def test_scoring_a_folder_counts_and_names_what_it_skipped(folder, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="iqa_lightning")
    Image.new("RGB", (20, 20), "gray").save(folder / "c.png")
    (folder / "b.png").write_bytes(b"not a png")
    out = tmp_path / "out" / "scores.csv"
    score(scoring_config(tmp_path, f"images={folder}", f"out={out}", "batch_size=2"))
    printed = capsys.readouterr().out
    assert [r["image"] for r in read_csv(out)] == ["a.png", "c.png"]
    skipped = read_csv(out.with_name("scores_skipped.csv"))
    assert [r["image"] for r in skipped] == ["b.png", "pipe.jpg", "x.png"]  # folder order
    assert skipped[2]["reason"].startswith("dangling symlink")
    assert "scored 2 of 5 images" in printed and "skipped 3 unreadable image(s)" in printed
    assert "  x.png: dangling symlink to" in printed and "  pipe.jpg: not a regular file" in printed
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring: ")]
    assert progress and progress[-1].startswith("scoring: 3/3 images in"), progress
