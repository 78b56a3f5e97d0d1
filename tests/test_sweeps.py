"""The grid sweeper's job list and a sweep whose jobs fail (no training: quick)."""

import csv

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, run_main


def composed_jobs(overrides, configs=True):
    """(sweeper, job overrides, composed configs) of ``train.py -m OVERRIDES``, nothing run.

    The sweeper is the one Hydra instantiates from ``hydra.sweeper``, with the same loader.
    ``configs=False``: the jobs' configs are not composed again (an empty list; the sweeper
    composed each already to drop duplicates).
    """
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        gh = GlobalHydra.instance()
        cfg = gh.hydra.compose_config(
            "train", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False
        )
        context = HydraContext(config_loader=gh.config_loader(), callbacks=Callbacks())
        sweeper = Plugins.instance().instantiate_sweeper(
            hydra_context=context, task_function=lambda _: None, config=cfg
        )
        jobs = sweeper.job_overrides(overrides)
        composed = []
        for job in jobs if configs else []:
            job_cfg = OmegaConf.to_container(
                gh.config_loader().load_sweep_config(cfg, list(job)), resolve=False
            )
            job_cfg.pop("hydra")
            composed.append(job_cfg)
    return sweeper, jobs, composed


def test_prompt_grid_runs_each_prompt_once_per_distinct_config():
    sweeper, jobs, configs = composed_jobs(["hparams_search=prompt_grid", "experiment=smoke"])
    assert type(sweeper).__name__ == "GridSweeper"
    texts = [OmegaConf.to_yaml(OmegaConf.create(c)) for c in configs]
    assert len(set(texts)) == len(texts), "two jobs of the grid compose the same config"
    runs = sorted(
        (c["prompt"]["_target_"].rsplit(".", 1)[-1], c["prompt"]["size"]) for c in configs
    )
    assert runs == [
        ("OverlayPrompt", None),
        ("PaddingPrompt", 10),
        ("PaddingPrompt", 30),
        ("PatchPrompt", 10),
        ("PatchPrompt", 10),
        ("PatchPrompt", 30),
        ("PatchPrompt", 30),
    ]
    assert sum("prompt=overlay" in job for job in jobs) == 1


METHODS = ["learn_lora", "learn_prompt", "learn_progressive", "learn_perception",
           "learn_level_ce", "learn_soft_label", "grpo_learning"]  # fmt: skip


def test_methods_search_runs_every_method_once_rali_last_from_the_lora_job():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", ["hparams_search=methods"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith("GridSweeper")
    assert "${task_name}" not in OmegaConf.to_container(cfg.hydra.sweep)["dir"]
    first, rali = cfg.hydra.sweeper.grids
    assert dict(first) == {"experiment": ",".join(METHODS)}
    assert rali["experiment"] == "learn_rali"
    assert rali["teacher.run"].endswith("/0")  # job 0 is learn_lora
    _, jobs, _ = composed_jobs(["hparams_search=methods"], configs=False)
    assert [j[0] for j in jobs] == [f"experiment={m}" for m in [*METHODS, "learn_rali"]]


def test_a_job_composing_like_an_earlier_one_is_dropped():
    # demo's padding prompt is 30 px wide, so `prompt=padding` alone repeats `prompt.size=30`.
    grids = "[{prompt.size: '10,30'},{prompt: padding}]"
    overrides = ["experiment=smoke", "hydra/sweeper=grid", f"hydra.sweeper.grids={grids}"]
    sweeper, jobs, configs = composed_jobs(overrides)
    assert [c["prompt"]["size"] for c in configs] == [10, 30]
    assert len(jobs) == 2 and len(sweeper.dropped) == 1
    assert "prompt=padding" in sweeper.dropped[0]


def test_failed_jobs_are_listed_and_the_sweep_exits_1(run_env, tmp_path, capsys):
    """Every job of a sweep stops at the config check: the summary lists each, once (the
    prompt_grid preset's 7 jobs compose in-process in test_prompt_grid_runs_each_prompt_once_...).
    ``python train.py -m ...`` runs in this process: Hydra's launcher runs its jobs in it too.
    """
    sweep = tmp_path / "sweep"
    args = ["-m", "prompt=padding,overlay", "experiment=smoke", "logger=csv",
            "trainer.max_epochs=0", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    ended = run_main("iqa_lightning.train", args, capsys, env=run_env)
    assert ended.code == 1, ended.err[-3000:]
    lines = [line for line in ended.err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: 2 of 2 sweep job(s) did not finish"), lines[-3:]
    assert "trainer.max_epochs=0" in lines[-1] and "Traceback" not in ended.err
    # One "error: job N (...)" line per job, then the sweep's own line.
    assert sum(line.startswith("error: job ") for line in lines) == 2
    configs = [p.read_text() for p in sweep.glob("*/.hydra/config.yaml")]
    assert len(configs) == 2 and len(set(configs)) == 2
    with open(sweep / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["job"]) for r in rows] == list(range(2))
    assert all(r["status"].startswith("failed: trainer.max_epochs=0") for r in rows)
    assert sorted((r["prompt"], r["prompt_size"]) for r in rows) == [
        ("overlay", ""),
        ("padding", "30"),
    ]
    assert not (sweep / "sweep_srcc_vs_size.png").exists()  # no finished job to plot


def test_srcc_plot_has_a_line_per_prompt_type_and_varying_mode():
    from iqa_lightning.sweeps import srcc_vs_size_figure

    def row(prompt, size, mode, srcc, status="ok"):
        return {"prompt": prompt, "prompt_size": size, "prompt_mode": mode, "dataset": "kadid",
                "test/srcc": srcc, "status": status}  # fmt: skip

    rows = [
        row("padding", 10, "add", 0.5),
        row("padding", 30, "add", 0.7),
        row("padding", 30, "mul", 0.6),
        row("patch_center", 10, "add", 0.4),
        row("overlay", None, "add", 0.8),  # no size: in the table, not on the plot
        row("patch_center", 30, "add", None, status="failed: ..."),
    ]
    fig = srcc_vs_size_figure(rows, "sweep x")
    (ax,) = fig.axes
    lines = {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
    }
    assert lines == {
        "padding add": ([10.0, 30.0], [0.5, 0.7]),
        "padding mul": ([30.0], [0.6]),
        "patch_center add": ([10.0], [0.4]),
    }
    assert (
        ax.get_title() == "sweep x"
        and ax.get_legend().get_title().get_text() == "prompt / prompt_mode"
    )
    assert srcc_vs_size_figure([row("overlay", None, "add", 0.8)]) is None


def test_srcc_plot_names_the_runs_it_leaves_out(caplog):
    from matplotlib.text import Text

    from iqa_lightning.sweeps import srcc_vs_size_figure

    rows = [
        {"job": n, "prompt": p, "prompt_size": size, "prompt_mode": "add", "dataset": "kadid",
         "test/srcc": srcc, "status": "ok"}
        for n, (p, size, srcc) in enumerate(
            [("padding", 10, 0.5), ("padding", 30, 0.7), ("overlay", None, 0.8),
             ("patch_center", 30, None)]
        )
    ]  # fmt: skip
    with caplog.at_level("INFO", logger="iqa_lightning.sweep_plots"):
        fig = srcc_vs_size_figure(rows)
    text = " ".join(" ".join(t.get_text() for t in fig.findobj(Text)).split())
    assert "job 2 (overlay, SRCC 0.800): no prompt size" in text
    assert "job 3 (patch_center): no test SRCC" in text
    (logged,) = [r.getMessage() for r in caplog.records]
    assert "job 2 (overlay, SRCC 0.800)" in logged and "job 3 (patch_center)" in logged
    caplog.clear()
    srcc_vs_size_figure(rows[:2])
    assert not caplog.records, "nothing left out, nothing said"


# ------------------------------------------------------------- methods sweep: fake job folders
def write_job(sweep, num, overrides, metrics=None, predictions=None, zero_shot=None, error=None):
    """A job folder as a train.py job leaves it: .hydra/ files, then metrics.json,
    predictions_test.csv and predictions_zeroshot_test.csv where given, or error.txt."""
    import json

    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    choices = {"dataset": "koniq", "prompt": "padding", "experiment": overrides[0].split("=")[1]}
    hydra = {"hydra": {"job": {"num": num}, "runtime": {"choices": choices}}}
    OmegaConf.save(OmegaConf.create(hydra), folder / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create({"prompt": {"size": 30}}), folder / ".hydra" / "config.yaml")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for name, rows in (("predictions_test.csv", predictions),
                       ("predictions_zeroshot_test.csv", zero_shot)):  # fmt: skip
        if rows is None:
            continue
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "mos_raw", "target", "score", "p_excellent", "p_bad"])
            for image_id, target, score in rows:
                writer.writerow([image_id, 1 + 4 * target, target, score, score / 2, 1 - score / 2])
    if error is not None:
        (folder / "error.txt").write_text(error + "\n")
    return folder


def prediction_rows(image_ids, targets, scores):
    return [(i, float(t), float(s)) for i, t, s in zip(image_ids, targets, scores, strict=True)]


@pytest.fixture
def methods_sweep(tmp_path):
    """Three jobs of a methods sweep on the same 40 test images: a run scoring every image at
    its target, a noisy run, and a job that failed before training; each finished job also
    holds the untrained model's (weakly correlated) zero-shot scores, in another row order."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    ids = [f"img_{i:03d}.jpg" for i in range(40)]
    targets = rng.uniform(0, 1, 40)
    zero = 0.3 * targets + rng.uniform(0, 1, 40)
    noisy = targets + rng.normal(0, 0.15, 40)
    shuffled = rng.permutation(40)
    zero_rows = prediction_rows([ids[i] for i in shuffled], targets[shuffled], zero[shuffled])
    sweep = tmp_path / "sweep"
    jobs = []
    for num, (method, scores, params) in enumerate(
        [("learn_prompt", targets, 12_288), ("learn_lora", noisy, 2_097_152)]
    ):
        metrics = {
            "method": method, "trainable_parameters": params, "wall_time_s": 61.25 * (num + 1),
            "peak_memory_mb": 2048.0 + num, "val/srcc": 0.5,
            "test/srcc": float(spearmanr(scores, targets)[0]),
            "test/plcc": float(pearsonr(scores, targets)[0]),
        }  # fmt: skip
        jobs.append(metrics)
        write_job(sweep, num, [f"experiment={method}"], metrics,
                  prediction_rows(ids, targets, scores), zero_rows)  # fmt: skip
    write_job(sweep, 2, ["experiment=learn_rali"], error="dataset.root: no such folder")
    return {"dir": sweep, "ids": ids, "targets": targets, "zero": zero, "noisy": noisy,
            "metrics": jobs}  # fmt: skip


def test_methods_sweep_summary_has_intervals_p_values_and_a_zero_shot_row(methods_sweep):
    import numpy as np
    from scipy.stats import spearmanr

    from iqa_lightning.bootstrap import bootstrap_intervals, paired_bootstrap_pvalue
    from iqa_lightning.sweeps import COLUMNS, summarize_sweep

    sweep, targets = methods_sweep["dir"], methods_sweep["targets"]
    summary = summarize_sweep(sweep)
    zero, perfect, noisy, failed = summary["rows"]
    assert zero["status"] == zero["method"] == "zero-shot" and zero["trainable_parameters"] == 0
    assert zero["job"] is None and zero["run_folder"] == "0" and zero["p_vs_zero_shot"] is None
    assert zero["test/srcc"] == pytest.approx(spearmanr(methods_sweep["zero"], targets)[0])
    expected = bootstrap_intervals(methods_sweep["zero"], targets)
    assert expected["srcc"] == pytest.approx(zero["test/srcc"], abs=1e-12)  # row order aside
    for row in (zero, perfect, noisy):
        for metric in ("srcc", "plcc"):
            lo, hi = row[f"test_{metric}_ci"]
            assert lo <= row[f"test/{metric}"] <= hi, (row["method"], metric)
    assert perfect["test_srcc_ci"] == (1.0, 1.0)
    lo, hi = noisy["test_srcc_ci"]
    assert 0 < hi - lo < 0.3
    assert noisy["test_srcc_ci"] == (
        pytest.approx(bootstrap_intervals(methods_sweep["noisy"], targets)["srcc_lo"]),
        pytest.approx(bootstrap_intervals(methods_sweep["noisy"], targets)["srcc_hi"]),
    )

    for row, metrics in zip((perfect, noisy), methods_sweep["metrics"], strict=True):
        assert row["status"] == "ok" and row["method"] == metrics["method"]
        for key in ("trainable_parameters", "wall_time_s", "peak_memory_mb", "test/srcc"):
            assert row[key] == metrics[key], key
    # Scores equal to the targets beat the zero-shot scores; the pairing is by image_id (the
    # zero-shot file is in another order).
    assert perfect["p_vs_zero_shot"] < 0.05
    assert noisy["p_vs_zero_shot"] == paired_bootstrap_pvalue(
        methods_sweep["noisy"], methods_sweep["zero"], targets
    )
    assert failed["status"].startswith("failed: dataset.root") and failed["method"] is None
    assert all(failed[k] is None for k in ("test_srcc_ci", "p_vs_zero_shot", "wall_time_s"))

    with open(summary["csv"], newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [r["method"] for r in rows] == ["zero-shot", "learn_prompt", "learn_lora", ""]
    assert [r["job"] for r in rows] == ["", "0", "1", "2"]
    lo, hi = (float(v) for v in rows[2]["test_srcc_ci"].strip("[]").split(", "))
    assert (lo, hi) == noisy["test_srcc_ci"]  # full precision in the CSV
    assert float(rows[1]["p_vs_zero_shot"]) == perfect["p_vs_zero_shot"]
    assert rows[3]["p_vs_zero_shot"] == "" and rows[3]["test_srcc_ci"] == ""

    markdown = summary["md"].read_text()
    assert "3 job(s), 2 finished." in markdown
    header = markdown.splitlines()[4]
    for column in ("method", "test_srcc_ci", "test_plcc_ci", "p_vs_zero_shot", "wall_time_s",
                   "peak_memory_mb"):  # fmt: skip
        assert f"| {column} |" in header, column
    noisy_line = next(line for line in markdown.splitlines() if "| learn_lora |" in line)
    assert f"| [{lo:.4f}, {hi:.4f}] |" in noisy_line and "| 122.5 | 2049 |" in noisy_line
    assert markdown.splitlines()[6].startswith("|  |  | zero-shot | zero-shot | koniq |")

    assert summary["params_plot"] == sweep / "sweep_srcc_vs_params.png"
    assert summary["params_plot"].stat().st_size > 1000
    assert np.isfinite(perfect["p_vs_zero_shot"])


def test_srcc_vs_params_plot_has_a_point_per_run_and_a_zero_shot_line(methods_sweep):
    from matplotlib.container import ErrorbarContainer

    from iqa_lightning.sweeps import read_sweep, srcc_vs_params_figure

    rows = read_sweep(methods_sweep["dir"])
    fig = srcc_vs_params_figure(rows, "sweep m")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_title() == "sweep m"
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    points = sorted((float(b.lines[0].get_xdata()[0]), float(b.lines[0].get_ydata()[0]))
                    for b in bars)  # fmt: skip
    assert points == [(12_288.0, rows[1]["test/srcc"]), (2_097_152.0, rows[2]["test/srcc"])]
    assert sorted(t.get_text() for t in ax.texts) == ["learn_lora", "learn_prompt"]
    (dashed,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(dashed.get_ydata()) == [rows[0]["test/srcc"]] * 2
    # Without a method (a prompt sweep's jobs) there is nothing to plot.
    plain = [dict(r, method=None) for r in rows]
    assert srcc_vs_params_figure(plain) is None


def test_without_zero_shot_files_there_is_no_zero_shot_row(methods_sweep):
    from iqa_lightning.sweeps import summarize_sweep

    sweep = methods_sweep["dir"]
    for path in sweep.glob("*/predictions_zeroshot_test.csv"):
        path.unlink()
    (sweep / "1" / "predictions_test.csv").unlink()
    rows = summarize_sweep(sweep)["rows"]
    assert [r["method"] for r in rows] == ["learn_prompt", "learn_lora", None]
    assert all(r["p_vs_zero_shot"] is None for r in rows)
    assert rows[0]["test_srcc_ci"] == (1.0, 1.0) and rows[1]["test_srcc_ci"] is None
    assert rows[1]["test/srcc"] == methods_sweep["metrics"][1]["test/srcc"]  # metrics.json
    assert (sweep / "sweep_srcc_vs_params.png").exists()


def test_an_unreadable_prediction_file_leaves_empty_cells_and_a_warning(methods_sweep, caplog):
    from iqa_lightning.sweeps import summarize_sweep

    sweep = methods_sweep["dir"]
    path = sweep / "1" / "predictions_test.csv"
    path.write_text(path.read_text().replace("img_005.jpg,", "img_005.jpg,nan,nan,nan,", 1))
    with caplog.at_level("WARNING", logger="iqa_lightning.sweeps"):
        rows = summarize_sweep(sweep, bootstrap=200)["rows"]
    assert rows[2]["method"] == "learn_lora" and rows[2]["test_srcc_ci"] is None
    assert rows[2]["test/srcc"] == methods_sweep["metrics"][1]["test/srcc"]
    assert str(path) in caplog.text and "NaN" in caplog.text
    assert rows[1]["p_vs_zero_shot"] < 0.05  # the other jobs are summarised as before


def test_the_zero_shot_row_is_not_counted_as_a_failed_job(methods_sweep, capsys):
    from iqa_lightning.sweeps import SweepSummary

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(methods_sweep["dir"])}}})
    with pytest.raises(SystemExit) as stop:
        SweepSummary(log_to_wandb=False).on_multirun_end(config)
    assert stop.value.code == 1
    out, err = capsys.readouterr()
    assert "(3 job(s))" in out
    assert err.strip().splitlines()[-1] == (
        "error: 1 of 3 sweep job(s) did not finish (job 2); first: dataset.root: no such folder"
    )
