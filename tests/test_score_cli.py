"""python -m iqa_lightning.score through real subprocesses: a folder of real PNG / JPEG files
(one corrupt), zero-shot with the tiny LLaVA, and a CSV list with MOS scored by a trained run
under 2-process CPU DDP. The Python API gives the same scores."""

import csv
import json
import math
import re
import sys

import numpy as np
import pytest
from PIL import Image

from iqa_lightning.cli import ConfigError
from iqa_lightning.data import AnnotationError, synthetic_dirname
from iqa_lightning.score import read_images, run_clashes
from iqa_lightning.scorer import Scorer
from tests.conftest import run_train

SCORE = ("-m", "iqa_lightning.score")
GOOD = ["a.png", "b.jpg", "sub/c.png"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real images of different sizes and modes, a corrupt JPEG and a text file."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / "a.png")
    ramp = np.linspace(0, 255, 90 * 50 * 3).reshape(90, 50, 3).astype(np.uint8)
    Image.fromarray(ramp).save(folder / "b.jpg", quality=70)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(
        folder / "sub" / "c.png"
    )
    whole = (folder / "b.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 3])  # truncated mid-scan
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def zero_shot(photos, run_env, tmp_path_factory):
    """The folder scored zero-shot by the tiny LLaVA (default workers, batch of 2)."""
    out = tmp_path_factory.mktemp("zero_shot") / "scores.csv"
    proc = run_train(
        [f"images={photos}", "model=tiny_llava", "batch_size=2", f"out={out}"],
        run_env,
        entry=SCORE,
    )
    return out, proc


def test_folder_zero_shot_scores_every_readable_image_and_lists_the_broken_one(zero_shot):
    out, proc = zero_shot
    rows = read_csv(out)
    assert [r["image"] for r in rows] == GOOD
    assert list(rows[0]) == ["image", "score"]
    scores = [float(r["score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores), scores  # good_fine_vs_poor_bad: P(good, fine)
    assert len(set(scores)) == 3, "different images, different scores"
    skipped = read_csv(out.with_name("scores_skipped.csv"))
    assert [r["image"] for r in skipped] == ["broken.jpg"] and skipped[0]["reason"]
    assert "scored 3 of 4 images" in proc.stdout and "skipped 1 unreadable" in proc.stdout
    assert "broken.jpg" in proc.stdout
    assert not out.with_name("scores_metrics.json").exists(), "no MOS, no metrics"
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores_skipped.csv"]


def test_python_api_gives_the_cli_scores(zero_shot, photos):
    out, _ = zero_shot
    cli = [float(r["score"]) for r in read_csv(out)]
    scorer = Scorer.from_config(model="tiny_llava", accelerator="cpu")
    from_paths = scorer([photos / name for name in GOOD]).tolist()
    with Image.open(photos / "a.png") as a, Image.open(photos / "sub" / "c.png") as c:
        from_pil = scorer([a, str(photos / "b.jpg"), c]).tolist()
    assert from_paths == pytest.approx(cli, abs=1e-6)
    assert from_pil == pytest.approx(cli, abs=1e-6)


# slow: the DDP test loop runs by default in tests/test_scale.py (ddp_sim training and test)
@pytest.mark.slow
def test_run_scores_a_csv_list_with_mos_under_ddp_as_training_tested_it(
    demo_run, run_env, cache_dir, tmp_path
):
    """The run's own test images, listed with their MOS, scored by the run on 2 processes: the
    scores are the ones training wrote, and the metrics its test figures."""
    run, _ = demo_run
    images = cache_dir / synthetic_dirname(n_refs=4, image_size=96) / "images"
    test_rows = read_csv(run / "predictions_test.csv")
    listing = tmp_path / "list" / "koniq_style.csv"
    listing.parent.mkdir()
    with open(listing, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "MOS", "SD"])
        for row in test_rows:
            writer.writerow([f"images/{row['image_id']}", row["mos_raw"], "0.5"])
        writer.writerow(["images/not_there.png", "3.0", "0.5"])
    out = tmp_path / "out" / "run_scores.csv"
    proc = run_train(
        [f"images={listing}", f"image_root={images.parent}", f"run={run}", "trainer=ddp_sim",
         "num_workers=0", "batch_size=4", f"out={out}"],
        run_env,
        entry=SCORE,
    )  # fmt: skip
    shares = dict(re.findall(r"rank (\d)/2 scored (\d+) images", proc.stdout))
    assert set(shares) == {"0", "1"} and sum(map(int, shares.values())) == len(test_rows) + 1

    rows = read_csv(out)
    assert [r["image"] for r in rows] == [f"images/{r['image_id']}" for r in test_rows]
    for ours, theirs in zip(rows, test_rows, strict=True):
        assert float(ours["score"]) == pytest.approx(float(theirs["score"]), abs=1e-6)
        assert float(ours["mos"]) == pytest.approx(float(theirs["mos_raw"]))
    skipped = read_csv(out.with_name("run_scores_skipped.csv"))
    assert skipped == [{"image": "images/not_there.png", "reason": "file does not exist"}]

    metrics = json.loads(out.with_name("run_scores_metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == len(test_rows) and metrics["mos_key"] == "MOS"
    for key in ("srcc", "plcc", "krcc"):
        assert math.isclose(metrics[key], trained[f"test/{key}"], abs_tol=1e-6), key
    assert f"SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}" in proc.stdout
    # Rank 0 alone writes: the three files and nothing else.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "run_scores.csv", "run_scores_metrics.json", "run_scores_skipped.csv",
    ]  # fmt: skip

    api = Scorer.from_run(run, accelerator="cpu", batch_size=16)
    paths = [images / r["image_id"] for r in test_rows[:5]]
    assert api(paths).tolist() == pytest.approx([float(r["score"]) for r in rows[:5]], abs=1e-6)


def test_missing_images_argument_is_one_line(monkeypatch, capsys):
    """The entry point says so before Hydra starts (so in-process: nothing else runs)."""
    from iqa_lightning import score as score_driver

    monkeypatch.setattr(sys, "argv", ["score", "model=tiny_llava"])
    with pytest.raises(SystemExit) as stop:
        score_driver.main()
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: images=<folder | image file | CSV/JSON list> (or videos=<folder | video file | list>) is required: what to score"
    ]


def test_lists_in_json_csv_and_text(photos, tmp_path):
    listing = tmp_path / "q_instruct.json"
    items = [
        {"img_path": str(photos / "a.png"), "gt_score": 3.5},
        {"img_path": "b.jpg", "gt_score": "2"},  # Q-Align writes scores as text too
    ]
    listing.write_text(json.dumps(items))
    found = read_images(listing, image_root=photos)
    assert found.paths == [photos / "a.png", photos / "b.jpg"]
    assert found.mos == [3.5, 2.0] and found.mos_key == "gt_score"
    assert read_images(listing, image_root=photos, mos_key="none").mos is None

    paths = tmp_path / "list.txt"
    paths.write_text(f"# my images\n{photos / 'a.png'}\n\nmissing.png\n")
    found = read_images(paths)
    assert found.names == [str(photos / "a.png"), "missing.png"]
    assert found.paths[1] == tmp_path / "missing.png" and found.mos is None

    folder = read_images(photos)
    assert folder.names == ["a.png", "b.jpg", "broken.jpg", "sub/c.png"]  # notes.txt is no image
    assert read_images(photos / "a.png").paths == [photos / "a.png"]


def test_bad_lists_are_named_with_their_row(tmp_path):
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("picture,mos\na.png,3\n")
    with pytest.raises(ConfigError, match=r"no_column\.csv: no image column among \['picture'"):
        read_images(no_column)
    bad_mos = tmp_path / "bad_mos.csv"
    bad_mos.write_text("image,dmos\na.png,3\nb.png,high\n")
    with pytest.raises(AnnotationError, match=r"bad_mos\.csv, line 3.*dmos.*high"):
        read_images(bad_mos)
    bad_item = tmp_path / "bad_item.json"
    bad_item.write_text(json.dumps([{"image": "a.png", "mos": 3}, {"image": "b.png"}]))
    with pytest.raises(ConfigError, match=r"bad_item\.json, item 1: mos=None is not a number"):
        read_images(bad_item)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        read_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        read_images(tmp_path / "empty")
    other = tmp_path / "scores.tsv"
    other.write_text("x")
    with pytest.raises(ConfigError, match="not a folder, an image file or a list"):
        read_images(other)


def test_run_refuses_its_model_score_and_prompt_from_the_command_line():
    args = ["images=x", "run=r", "model=tiny_llava", "score.words=[a,b]", "+prompt.size=3",
            "trainer=ddp_sim", "batch_size=4"]  # fmt: skip
    assert run_clashes(args) == ["model=tiny_llava", "score.words=[a,b]", "+prompt.size=3"]


def scoring_config(tmp_path, *overrides):
    """The CLI's config, composed here (no Hydra run: the Trainer's folder is given)."""
    from iqa_lightning.scorer import compose_scoring

    return compose_scoring(["model=tiny_llava", "trainer=cpu", "num_workers=0",
                            f"trainer.default_root_dir={tmp_path}", *overrides])  # fmt: skip


def test_one_readable_image_with_mos_gives_undefined_figures(photos, tmp_path, capsys):
    from iqa_lightning.score import score

    listing = tmp_path / "one.csv"
    listing.write_text(f"path,mos\n{photos / 'a.png'},3.0\n{photos / 'broken.jpg'},2.0\n")
    out = tmp_path / "one_scores.csv"
    metrics = score(scoring_config(tmp_path, f"images={listing}", f"out={out}"))
    assert metrics["n"] == 1 and metrics["srcc"] is None and metrics["plcc"] is None
    assert json.loads(out.with_name("one_scores_metrics.json").read_text())["srcc"] is None
    assert "SRCC n/a  PLCC n/a  (n=1" in capsys.readouterr().out
    assert [r["image"] for r in read_csv(out.with_name("one_scores_skipped.csv"))] == [
        str(photos / "broken.jpg")
    ]


def test_no_readable_image_is_an_error_after_listing_them(photos, tmp_path):
    from iqa_lightning.score import score

    folder = tmp_path / "all_broken"
    folder.mkdir()
    for name in ("x.jpg", "y.png"):
        (folder / name).write_bytes((photos / "broken.jpg").read_bytes())
    out = tmp_path / "none.csv"
    with pytest.raises(ConfigError, match="none of the 2 images could be read"):
        score(scoring_config(tmp_path, f"images={folder}", f"out={out}"))
    assert [r["image"] for r in read_csv(out.with_name("none_skipped.csv"))] == ["x.jpg", "y.png"]
    assert read_csv(out) == []
