"""Run folders written by an earlier commit still load, score, evaluate and resume as they did.

``tests/fixtures/runs/<method>/`` are tiny run folders trained by the commit named in their
``expected_scores.json`` (one per method: ``stage=2``, ``stage=1``, ``stage=progressive`` with
Q-Adapt's prompter, ``stage=perception_inference``, RALI), with the scores that commit's
:meth:`Scorer.from_run` gave on ``tests/fixtures/runs/images/``; README.md there says how to
make them again. The current code must give the same scores (float32, atol 1e-5), the same test
predictions through ``iqa_lightning.eval`` (the synthetic set is generated again into the test
cache; the run's ``.hydra/config.yaml`` names no absolute path) and, where the fixture keeps
``checkpoints/last.ckpt``, resume the run as ``python train.py resume=<run>`` does. When a change
breaks one of them on purpose, say so in the commit and make the fixtures again.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from iqa_lightning.methods import method_of
from iqa_lightning.run_folder import RunFolder
from iqa_lightning.runs import load_run, load_run_config
from iqa_lightning.scorer import Scorer
from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"
IMAGES = FIXTURES / "images"
METHODS = sorted(p.parent.name for p in FIXTURES.glob("*/expected_scores.json"))
RESUMABLE = [m for m in METHODS if (FIXTURES / m / "checkpoints" / "last.ckpt").is_file()]
ATOL = 1e-5


def expected(method: str) -> dict:
    return json.loads((FIXTURES / method / "expected_scores.json").read_text())


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def copy_run(method: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / method, tmp_path / method))


def test_every_method_has_a_fixture():
    assert METHODS == ["perception_inference", "progressive", "rali", "stage1", "stage2"]
    assert RESUMABLE == ["stage1", "stage2"]
    images = {p.name for p in IMAGES.glob("*.png")}
    assert all(set(expected(m)["images"]) == images for m in METHODS)
    assert len({expected(m)["commit"] for m in METHODS}) == 1  # one commit made them all


@pytest.mark.parametrize("method", METHODS)
def test_run_folder_names_every_file_an_earlier_run_wrote(method):
    folder = RunFolder(FIXTURES / method)
    assert folder.finished and folder.config.is_file() and folder.overrides.is_file()
    assert folder.predictions.is_file() and folder.split.is_file()
    run_method = method_of(load_run_config(folder.path))
    assert run_method.missing_files(folder.path) == []
    if run_method.name == "rali":
        assert (folder.scorer / "scorer.json").is_file()
    else:
        assert folder.tuned.is_file() and (folder.lora.is_file() or method == "stage2")


@pytest.mark.parametrize("method", METHODS)
def test_a_fixture_run_scores_as_it_did(method):
    want = expected(method)
    run = FIXTURES / method
    before = files(run)
    paths = [IMAGES / name for name in want["images"]]

    got = Scorer.from_run(run, accelerator="cpu").score(paths, names=want["images"])
    assert got.images == want["images"] and not got.skipped
    torch.testing.assert_close(got.scores, torch.tensor(want["scores"]), atol=ATOL, rtol=0)
    if "scores_from_rali" in want:  # the exported scorer/ loads alone as well
        rali = Scorer.from_rali(run / "scorer", accelerator="cpu")
        scores = rali.score(paths, names=want["images"]).scores
        torch.testing.assert_close(scores, torch.tensor(want["scores_from_rali"]), atol=ATOL,
                                   rtol=0)  # fmt: skip

    loaded = load_run(run)  # the notebook's reader: metrics, overrides, test predictions
    assert loaded.overrides[0].startswith("experiment=")
    assert all(k in loaded.metrics for k in ("test/srcc", "test/plcc", "val/srcc_best"))
    assert len(loaded.predictions) == sum(r["split"] == "test" for r in read_csv(run / "split.csv"))
    assert files(run) == before  # reading a run writes nothing into it


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(  # every rebuild is scored above; here the word-score and RALI paths
    "method", [pytest.param(m, marks=[] if m in ("stage2", "rali") else [pytest.mark.slow])
               for m in METHODS]
)  # fmt: skip
def test_eval_of_a_fixture_run_gives_its_test_predictions(method, tmp_path, cache_dir,
                                                          monkeypatch):  # fmt: skip
    from iqa_lightning.eval import evaluate

    monkeypatch.setenv("IQA_CACHE_DIR", str(cache_dir))  # the run's dataset, generated again
    run = copy_run(method, tmp_path)
    run_cfg = load_run_config(run)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"run={run}", f"model.image_size={run_cfg.model.image_size}",
            f"seed={run_cfg.seed}", "eval.bootstrap=0", "trainer=cpu",
        ], return_hydra_config=True)  # fmt: skip
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run)  # as hydra.run.dir=${run} makes it
    HydraConfig.instance().set_config(cfg)
    results = evaluate(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))

    old = {r["image_id"]: float(r["score"]) for r in read_csv(run / "predictions_test.csv")}
    rows = read_csv(run / "predictions_eval_synthetic.csv")
    assert results["synthetic"]["split"] == "test" and results["synthetic"]["n"] == len(old)
    assert sorted(r["image_id"] for r in rows) == sorted(old)
    new = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(new, torch.tensor([old[r["image_id"]] for r in rows],
                                                 dtype=torch.float64), atol=ATOL, rtol=0)  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert results["synthetic"]["srcc"] == pytest.approx(metrics["test/srcc"], abs=1e-4)


def resume_in_process(run: Path, epochs: int, monkeypatch, check_config: bool = True,
                      extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """What ``python train.py resume=<run> trainer.max_epochs=<epochs> test=false`` does here:
    the run's own overrides composed again (with ``extra``), checked against its
    ``.hydra/config.yaml`` (unless ``check_config`` is false), fitted on from
    ``checkpoints/last.ckpt`` into the same folder."""
    from iqa_lightning.resume import RESUME_ENV, resume_args
    from iqa_lightning.train import train

    args = resume_args([f"resume={run}", f"trainer.max_epochs={epochs}", "test=false"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=quote_numeric_choices(
            [*(a for a in args if not a.startswith("hydra.")), *extra]),
            return_hydra_config=True)  # fmt: skip
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run.resolve())  # paths.output_dir: the run folder
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    if check_config:  # train() then checks the composed config against the saved one
        monkeypatch.setenv(RESUME_ENV, str(run.resolve()))
    else:
        monkeypatch.delenv(RESUME_ENV, raising=False)
    train(job)
    return json.loads((run / "metrics.json").read_text())


def check_resumed(method: str, tmp_path: Path, monkeypatch, check_config: bool,
                  extra: tuple[str, ...] = ()) -> None:  # fmt: skip
    from iqa_lightning.checkpoints import load_checkpoint

    run = copy_run(method, tmp_path)
    hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    last = run / "checkpoints" / "last.ckpt"
    steps = load_checkpoint(last, map_location="cpu")["global_step"]
    trained = json.loads((run / "metrics.json").read_text())["epochs"]

    metrics = resume_in_process(run, trained + 1, monkeypatch, check_config, extra)
    assert metrics["epochs"] == trained + 1
    assert metrics["val/srcc"] == metrics["val/srcc"]  # a figure, not NaN
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files
    # One more epoch on top of the checkpoint's steps (a fresh start would count from 0). The
    # folder moved since it was trained, so Lightning restores no last_model_path; without its
    # version counter it still writes last.ckpt itself, never a last-v1.ckpt beside it.
    batches = 1 if extra else steps // trained
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))
    assert load_checkpoint(last, map_location="cpu")["global_step"] == steps + batches


def resumable(cheap: str = "stage2") -> list:
    """:data:`RESUMABLE`, all but ``cheap`` marked slow (a stage-1 epoch takes about a minute)."""
    return [pytest.param(m, marks=[] if m == cheap else pytest.mark.slow) for m in RESUMABLE]


@pytest.mark.parametrize("method", resumable())
def test_a_fixture_runs_last_checkpoint_loads_and_trains_on(method, tmp_path, cache_dir,
                                                            monkeypatch):  # fmt: skip
    """The run's overrides composed with today's conf/ and fitted on from its last.ckpt (the
    optimiser, scheduler and loop state of the old code) for one batch, without the config
    comparison."""
    monkeypatch.setenv("IQA_CACHE_DIR", str(cache_dir))
    short = ("+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1")
    check_resumed(method, tmp_path, monkeypatch, check_config=False, extra=short)


@pytest.mark.parametrize("method", resumable())
def test_a_fixture_run_resumes_from_its_last_checkpoint(method, tmp_path, cache_dir, monkeypatch):
    """``python train.py resume=<run>`` on a run of the fixtures' commit: the config composed
    now must equal the saved one, then it trains on as above."""
    monkeypatch.setenv("IQA_CACHE_DIR", str(cache_dir))
    check_resumed(method, tmp_path, monkeypatch, check_config=True)


def test_a_run_with_text_columns_loads_its_predictions(tmp_path):
    run = copy_run("stage2", tmp_path)
    predictions = RunFolder(run).predictions
    rows = read_csv(predictions)
    with open(predictions, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, [*rows[0], "answer", "parse_ok"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "answer": f"<answer>{i}, maybe</answer>", "parse_ok": "True"})
    loaded = load_run(run).predictions
    assert loaded[0]["answer"] == "<answer>0, maybe</answer>" and loaded[0]["parse_ok"] == "True"
    assert loaded[1]["score"] == float(rows[1]["score"])
