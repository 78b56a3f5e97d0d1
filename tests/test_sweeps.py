"""The grid sweeper's job list and a sweep whose jobs fail (no training: quick)."""

import csv
import subprocess
import sys

from omegaconf import OmegaConf

from tests.conftest import REPO


def composed_jobs(overrides):
    """(sweeper, job overrides, composed configs) of ``train.py -m OVERRIDES``, nothing run.

    The sweeper is the one Hydra instantiates from ``hydra.sweeper``, with the same loader.
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
        configs = []
        for job in jobs:
            job_cfg = OmegaConf.to_container(
                gh.config_loader().load_sweep_config(cfg, list(job)), resolve=False
            )
            job_cfg.pop("hydra")
            configs.append(job_cfg)
    return sweeper, jobs, configs


def test_prompt_grid_runs_each_prompt_once_per_distinct_config():
    sweeper, jobs, configs = composed_jobs(["hparams_search=prompt_grid", "experiment=demo"])
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


def test_a_job_composing_like_an_earlier_one_is_dropped():
    # demo's padding prompt is 30 px wide, so `prompt=padding` alone repeats `prompt.size=30`.
    grids = "[{prompt.size: '10,30'},{prompt: padding}]"
    overrides = ["experiment=demo", "hydra/sweeper=grid", f"hydra.sweeper.grids={grids}"]
    sweeper, jobs, configs = composed_jobs(overrides)
    assert [c["prompt"]["size"] for c in configs] == [10, 30]
    assert len(jobs) == 2 and len(sweeper.dropped) == 1
    assert "prompt=padding" in sweeper.dropped[0]


def test_failed_jobs_are_listed_and_the_sweep_exits_1(run_env, tmp_path):
    """Every job of prompt_grid stops at the config check: the summary lists each, once.

    No ``-m``: ``hparams_search=prompt_grid`` makes the run a multirun itself.
    """
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "hparams_search=prompt_grid",
            "experiment=demo",
            "logger=csv",
            "trainer.max_epochs=0",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: 7 of 7 sweep job(s) did not finish"), lines[-3:]
    assert "trainer.max_epochs=0" in lines[-1] and "Traceback" not in proc.stderr
    # One "error: job N (...)" line per job, then the sweep's own line.
    assert sum(line.startswith("error: job ") for line in lines) == 7
    configs = [p.read_text() for p in sweep.glob("*/.hydra/config.yaml")]
    assert len(configs) == 7 and len(set(configs)) == 7
    with open(sweep / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["job"]) for r in rows] == list(range(7))
    assert all(r["status"].startswith("failed: trainer.max_epochs=0") for r in rows)
    assert sorted((r["prompt"], r["prompt_size"]) for r in rows) == [
        ("overlay", ""),
        ("padding", "10"),
        ("padding", "30"),
        ("patch_center", "10"),
        ("patch_center", "30"),
        ("patch_topleft", "10"),
        ("patch_topleft", "30"),
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
