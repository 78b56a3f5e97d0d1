"""Cross-dataset evaluation of a trained demo run, through real subprocesses (2-process CPU
DDP included)."""

import csv
import importlib
import json
import math
import re
import shutil
import sys

import numpy as np
import pytest

from iqa_lightning.eval import correlations
from iqa_lightning.metrics import plcc_logistic
from tests.conftest import QUIETING_ENV, run_main, run_train
from tests.data.fixtures import write_kadid, write_koniq

EVAL = ("-m", "iqa_lightning.eval")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {"kadid": write_kadid(base / "kadid10k", n_refs=4), "koniq": write_koniq(base / "koniq")}


@pytest.mark.slow  # a subprocess; one-dataset eval runs by default (test_rebuilt_run_reproduces_its
# _test_predictions), the table and intervals in test_bootstrap_intervals_join_the_figures_table_and_json
def test_two_datasets_give_one_table(demo_run, roots, run_env):
    run, _ = demo_run
    proc = run_train(
        [
            f"run={run}",
            "eval.datasets=[kadid,koniq]",
            f"eval.roots={{kadid: '{roots['kadid']}', koniq: '{roots['koniq']}'}}",
            "eval.name=cross",
        ],
        run_env,
        entry=EVAL,
    )
    results = json.loads((run / "eval_cross.json").read_text())
    assert set(results) == {"kadid", "koniq"}
    for figures in results.values():
        for key in ("srcc", "plcc", "krcc", "plcc_logistic4", "plcc_logistic5"):
            assert -1 <= figures[key] <= 1, key
    assert results["koniq"]["n"] == 30 and results["kadid"]["n"] == len(
        read_csv(roots["kadid"] / "dmos.csv")
    )
    for figures in results.values():  # eval.bootstrap=1000 by default
        for metric in ("srcc", "plcc"):
            lo, hi = figures[f"{metric}_lo"], figures[f"{metric}_hi"]
            assert -1 <= lo <= figures[metric] <= hi <= 1, (metric, figures)
    table = (run / "eval_cross.md").read_text()
    assert table.startswith("| dataset | srcc | plcc | krcc") and "| koniq |" in table
    koniq = results["koniq"]
    assert (
        f"| koniq | {koniq['srcc']:.4f} [{koniq['srcc_lo']:.4f}, {koniq['srcc_hi']:.4f}] | "
        f"{koniq['plcc']:.4f} [{koniq['plcc_lo']:.4f}, {koniq['plcc_hi']:.4f}] | "
        f"{koniq['krcc']:.4f} | "
    ) in table
    assert table in proc.stdout
    assert len(read_csv(run / "predictions_eval_koniq.csv")) == 30
    # The run's own .hydra is left as it was.
    assert "experiment=smoke" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.fixture
def single_eval(demo_run, run_env, tmp_path_factory, capsys):
    """One single-process evaluation of the run as a user asks for it: ``run=`` and nothing
    else (the run's own dataset, its test split; ``python -m iqa_lightning.eval`` run in this
    process); copies of its files."""
    run, _ = demo_run
    user_env = {k: v for k, v in run_env.items() if k not in QUIETING_ENV}
    ended = run_main("iqa_lightning.eval", [f"run={run}", "eval.name=single"], capsys, user_env)
    assert ended.code == 0, ended.text[-5000:]
    assert "synthetic (test, " in ended.text
    # quiet output (iqa_lightning/quiet.py): no tips, no repeated lines, the table last
    assert "Tip:" not in ended.text and "INFO: " not in ended.text
    assert "Run summary" not in ended.err
    assert ended.out.rstrip().splitlines()[-1].startswith("| synthetic | ")
    keep = tmp_path_factory.mktemp("single_eval")
    for name in ("eval_single.json", "eval_single.md", "predictions_eval_synthetic.csv"):
        shutil.copy(run / name, keep / name)
    return keep


def test_rebuilt_run_reproduces_its_test_predictions(demo_run, single_eval):
    """By default eval scores the run's own dataset's test split (eval.split=auto), with the
    scores and figures training wrote."""
    run, _ = demo_run
    ours = {
        r["image_id"]: float(r["score"])
        for r in read_csv(single_eval / "predictions_eval_synthetic.csv")
    }
    theirs = {r["image_id"]: float(r["score"]) for r in read_csv(run / "predictions_test.csv")}
    assert set(ours) == set(theirs)
    for image_id, score in theirs.items():
        assert ours[image_id] == pytest.approx(score, abs=1e-5)
    figures = json.loads((single_eval / "eval_single.json").read_text())["synthetic"]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("srcc", "plcc", "krcc"):
        assert figures[key] == pytest.approx(metrics[f"test/{key}"], abs=1e-6), key
    assert figures["split"] == "test"
    assert (single_eval / "eval_single.md").read_text().splitlines()[2].endswith(" | test |")


# Slow: the same loop under ddp_sim is tested by default by tests/test_scale.py's DDP run.
@pytest.mark.slow
def test_ddp_sim_eval_scores_each_image_once_with_single_process_figures(
    demo_run, single_eval, run_env
):
    run, _ = demo_run
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    proc = run_train(
        [f"run={run}", "eval.split=test", "eval.name=ddp", "trainer=ddp_sim"],
        run_env,
        entry=EVAL,
    )  # fmt: skip
    shares = dict(re.findall(r"rank (\d)/2 scored (\d+) images", proc.stdout + proc.stderr))
    assert set(shares) == {"0", "1"}, "both DDP processes score"

    rows = read_csv(run / "predictions_eval_synthetic.csv")
    single_rows = read_csv(single_eval / "predictions_eval_synthetic.csv")
    assert len(rows) % 2 == 1, "an odd split makes DistributedSampler padding visible"
    assert sum(int(n) for n in shares.values()) == len(rows), "no image scored twice"
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in single_rows]
    for ddp_row, one_row in zip(rows, single_rows, strict=True):
        assert math.isclose(float(ddp_row["score"]), float(one_row["score"]), abs_tol=1e-6)
        assert ddp_row["mos_raw"] == one_row["mos_raw"]

    ddp = json.loads((run / "eval_ddp.json").read_text())["synthetic"]
    single = json.loads((single_eval / "eval_single.json").read_text())["synthetic"]
    assert ddp["n"] == single["n"] == len(rows)
    for key in ("srcc", "plcc", "krcc", "plcc_logistic4", "plcc_logistic5"):
        assert math.isclose(ddp[key], single[key], rel_tol=1e-6, abs_tol=1e-9), key

    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    written = {str(p) for p in after if before.get(p) != after[p] and p.parts[0] != "wandb"}
    # Rank 0's files only (and the W&B table): the second process logs to the terminal.
    assert written == {"eval_ddp.json", "eval_ddp.md", "predictions_eval_synthetic.csv",
                       "eval.log"}, written  # fmt: skip


def test_eval_without_run_says_what_is_missing(run_env, capsys):
    ended = run_main("iqa_lightning.eval", ["eval.split=test"], capsys, env=run_env)
    assert ended.code == 1
    assert ended.last_line() == (
        "error: run=<run folder> or model=<preset> is required: the train.py run folder to "
        "evaluate, or a model preset to score zero-shot"
    )
    assert "Traceback" not in ended.err and "MissingMandatoryValue" not in ended.err


@pytest.mark.parametrize("driver", ["eval", "analyze"])
def test_a_missing_run_folder_ends_in_one_line_and_is_not_created(driver, monkeypatch, capsys,
                                                                  tmp_path):  # fmt: skip
    module = importlib.import_module(f"iqa_lightning.{driver}")
    missing, empty = tmp_path / "runs" / "missing", tmp_path / "empty"
    empty.mkdir()
    for run, why in ((missing, "does not exist"), (empty, "no .hydra/config.yaml")):
        monkeypatch.setattr(sys, "argv", [driver, f"run={run}"])
        with pytest.raises(SystemExit) as exit_info:
            module.main()
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: run={run}: ") and why in err[0], err
    assert not (tmp_path / "runs").exists() and not list(empty.iterdir()), "nothing created"


def test_auto_split_is_the_runs_test_split_and_every_image_elsewhere():
    from omegaconf import OmegaConf

    from iqa_lightning.eval import split_for

    run_cfg = OmegaConf.create({"dataset": {"name": "koniq"}})
    koniq, kadid = OmegaConf.create({"name": "koniq"}), OmegaConf.create({"name": "kadid"})
    assert split_for("auto", koniq, run_cfg) == "test"
    assert split_for("auto", kadid, run_cfg) == "all"
    assert split_for("all", koniq, run_cfg) == "all" and split_for("test", kadid, run_cfg) == "test"


def test_missing_run_folder_is_named(run_env, tmp_path, capsys):
    ended = run_main("iqa_lightning.eval", [f"run={tmp_path}"], capsys, env=run_env)
    assert ended.code != 0
    assert ".hydra/config.yaml" in ended.last_line()


def test_logistic_plcc_undoes_a_monotonic_nonlinearity():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, 200)
    mos = 1 + 4 / (1 + np.exp(-12 * (pred - 0.5))) + rng.normal(0, 0.05, 200)
    plain = np.corrcoef(pred, mos)[0, 1]
    for params in (4, 5):
        fitted = plcc_logistic(pred, mos, params=params)
        assert fitted > plain + 0.02 and fitted > 0.99
    assert np.isnan(plcc_logistic(np.ones(10), mos[:10]))


def test_bootstrap_intervals_join_the_figures_table_and_json():
    from iqa_lightning.bootstrap import bootstrap_intervals
    from iqa_lightning.eval import _json_safe, markdown_table

    rng = np.random.default_rng(2)
    pred = rng.uniform(0, 1, 60)
    mos = pred + rng.normal(0, 0.3, 60)
    figures = correlations(pred.tolist(), mos.tolist(), bootstrap=300, seed=4)
    bounds = bootstrap_intervals(pred, mos, n=300, seed=4)
    for key in ("srcc_lo", "srcc_hi", "plcc_lo", "plcc_hi"):
        assert figures[key] == bounds[key], key
    assert figures["srcc"] == pytest.approx(bounds["srcc"], abs=1e-6)
    assert figures["srcc_lo"] < figures["srcc"] < figures["srcc_hi"]
    assert correlations(pred.tolist(), mos.tolist(), bootstrap=300, seed=4) == figures
    assert correlations(pred.tolist(), mos.tolist(), bootstrap=300, seed=5) != figures

    off = correlations(pred.tolist(), mos.tolist())  # bootstrap=0: the figures as before
    assert set(off) == {"srcc", "plcc", "krcc", "plcc_logistic4", "plcc_logistic5", "n"}
    table = markdown_table({"a": figures, "b": off})
    row_a, row_b = table.splitlines()[2:]
    srcc_cell, plcc_cell, krcc_cell = row_a.split(" | ")[1:4]
    assert (
        srcc_cell == f"{figures['srcc']:.4f} [{figures['srcc_lo']:.4f}, {figures['srcc_hi']:.4f}]"
    )
    assert (
        plcc_cell == f"{figures['plcc']:.4f} [{figures['plcc_lo']:.4f}, {figures['plcc_hi']:.4f}]"
    )
    assert krcc_cell == f"{figures['krcc']:.4f}" and "[" not in row_b

    # A NaN score (a diverged run) gives NaN intervals, not an error after the scoring.
    nan = correlations([0.1, 0.2, float("nan")], [1.0, 2.0, 3.0], bootstrap=50)
    assert all(math.isnan(nan[k]) for k in ("srcc_lo", "srcc_hi", "plcc_lo", "plcc_hi"))
    assert _json_safe({"x": nan})["x"]["srcc_hi"] is None


def test_correlations_are_not_synced_and_undefined_figures_are_nan():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 1, 50)
    mos = pred + rng.normal(0, 0.3, 50)
    figures = correlations(pred.tolist(), mos.tolist())
    assert figures["n"] == 50
    assert figures["plcc"] == pytest.approx(np.corrcoef(pred, mos)[0, 1], abs=1e-9)
    from scipy.stats import kendalltau, spearmanr

    assert figures["srcc"] == pytest.approx(spearmanr(pred, mos)[0], abs=1e-6)
    assert figures["krcc"] == pytest.approx(kendalltau(pred, mos)[0], abs=1e-6)
    one = correlations([0.5], [3.0])
    assert one["n"] == 1 and all(math.isnan(one[k]) for k in ("srcc", "plcc", "krcc"))
