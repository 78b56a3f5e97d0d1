"""Cross-dataset evaluation of a trained demo run, through real subprocesses."""

import csv
import json

import numpy as np
import pytest

from iqa_lightning.metrics import plcc_logistic
from tests.conftest import run_train
from tests.data.fixtures import write_kadid, write_koniq

EVAL = ("-m", "iqa_lightning.eval")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {"kadid": write_kadid(base / "kadid10k", n_refs=4), "koniq": write_koniq(base / "koniq")}


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
    table = (run / "eval_cross.md").read_text()
    assert table.startswith("| dataset | srcc | plcc | krcc") and "| koniq |" in table
    assert table in proc.stdout
    assert len(read_csv(run / "predictions_eval_koniq.csv")) == 30
    # The run's own .hydra is left as it was.
    assert "experiment=demo" in (run / ".hydra" / "overrides.yaml").read_text()


def test_rebuilt_run_reproduces_its_test_predictions(demo_run, run_env):
    """Evaluating the run on its own dataset's test split gives the scores training wrote."""
    run, _ = demo_run
    config = (run / ".hydra" / "overrides.yaml").read_text()
    overrides = [line[2:] for line in config.splitlines() if line.startswith("- dataset.")]
    run_train([f"run={run}", "eval.split=test", *overrides], run_env, entry=EVAL)
    ours = {
        r["image_id"]: float(r["score"]) for r in read_csv(run / "predictions_eval_synthetic.csv")
    }
    theirs = {r["image_id"]: float(r["score"]) for r in read_csv(run / "predictions_test.csv")}
    assert set(ours) == set(theirs)
    for image_id, score in theirs.items():
        assert ours[image_id] == pytest.approx(score, abs=1e-5)


def test_missing_run_folder_is_named(run_env, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, *EVAL, f"run={tmp_path}"], cwd=REPO, env=run_env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and ".hydra/config.yaml" in proc.stderr


def test_logistic_plcc_undoes_a_monotonic_nonlinearity():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, 200)
    mos = 1 + 4 / (1 + np.exp(-12 * (pred - 0.5))) + rng.normal(0, 0.05, 200)
    plain = np.corrcoef(pred, mos)[0, 1]
    for params in (4, 5):
        fitted = plcc_logistic(pred, mos, params=params)
        assert fitted > plain + 0.02 and fitted > 0.99
    assert np.isnan(plcc_logistic(np.ones(10), mos[:10]))
