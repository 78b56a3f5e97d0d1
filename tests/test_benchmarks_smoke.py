"""Benchmarks that cannot rot: every tests/benchmarks/bench_*.py runs in its ``--smoke`` mode
(one tiny iteration, seconds), found by glob so a new benchmark is covered at once; it must
offer ``main(argv)`` with ``--smoke``. Each runs in this process (imports are shared), except
what a benchmark itself starts (bench_rali's two scorer processes). bench_gpu.py is skipped
without CUDA. bench_startup's smoke mode times a fresh ``python train.py`` (the one benchmark whose
subject is a new process): it runs with the slow tests, and its parts run here by default. And a
bench_rali child that dies is an error naming how it died, never a hang."""

import argparse
import importlib
import multiprocessing
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))
#: Benchmarks whose smoke mode starts ``python train.py`` (seconds of imports): slow, their parts
#: tested by default below.
FRESH_PROCESS = {"bench_startup"}


def smoke_param(script):
    marks = [pytest.mark.slow] if script.stem in FRESH_PROCESS else []
    return pytest.param(script, id=script.stem, marks=marks)


@pytest.fixture
def benchmarks(monkeypatch):
    """Import benchmark modules by name, as they import each other (``from _common import``);
    bench_rali's spawned children find the module on this path too. What a benchmark sets for
    its own process (logger levels, warning filters, torch's threads) is put back after it, so
    the tests that follow see the process as it was."""
    import logging
    import warnings

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        yield importlib.import_module
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    torch.set_num_threads(threads)


def test_every_benchmark_is_found():
    assert {"bench_scoring", "bench_rali", "bench_learning", "bench_gpu"} <= {
        s.stem for s in SCRIPTS
    }


@pytest.mark.parametrize("script", [smoke_param(s) for s in SCRIPTS])
def test_benchmark_runs_in_smoke_mode(script, benchmarks, capsys):
    if script.stem == "bench_gpu" and not torch.cuda.is_available():
        pytest.skip("bench_gpu.py measures a CUDA GPU and this machine has none")
    main = benchmarks(script.stem).main
    main(["--smoke"])
    printed = capsys.readouterr().out
    assert printed.strip(), f"{script.name} --smoke printed nothing"


def _first_batch(callback):
    callback.on_train_batch_start(None, None, None, 0)
    os._exit(5)  # reached only if the callback let the process go on


def test_startup_benchmark_parts(benchmarks, capfd, tmp_path):
    """bench_startup --smoke without its train.py run (the demo run and tests/test_resume.py
    start train.py by default): its timer reads a process's mark and names how a process that
    never printed one ended; its callback override composes and builds as a run's callbacks;
    the callback prints the mark at the first batch and ends the process with exit code 0."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from iqa_lightning.build import CONFIG_DIR, build_callbacks

    bench = benchmarks("bench_startup")
    env = dict(os.environ)
    mark = f"import time; print({bench.MARK!r}, time.time(), flush=True)"
    assert 0 < bench.timed([sys.executable, "-c", mark], env) < 60
    with pytest.raises(RuntimeError, match=r"ended \(exit code 3\) before its first step"):
        bench.timed([sys.executable, "-c", "import sys; sys.exit(3)"], env)

    override = "+callbacks.first_step._target_=bench_startup.FirstStepMark"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = ["experiment=smoke", "logger=none", f"paths.output_dir={tmp_path}", override]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    (first_step,) = [c for c in build_callbacks(cfg) if type(c).__module__ == "bench_startup"]
    capfd.readouterr()
    child = multiprocessing.get_context("fork").Process(target=_first_batch, args=(first_step,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the first batch did not end the process"
    assert re.fullmatch(rf"{bench.MARK} \d+\.\d+\n", capfd.readouterr().out)


def _exits_with_3(role, args, queue):
    os._exit(3)


def _killed(role, args, queue):
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


@pytest.fixture
def no_hang():
    """A hang fails the test after 60 s instead of stopping the suite."""

    def hung(signum, frame):
        raise TimeoutError("bench_rali waited for a dead child")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "target, cause",
    [
        (_killed, r"killed by SIGKILL \(out of memory\?"),
        (_exits_with_3, r"exit code 3$"),
    ],
    ids=["killed", "exit_code"],
)
def test_a_dead_rali_child_is_an_error_naming_how_it_died(target, cause, benchmarks, no_hang):
    bench_rali = benchmarks("bench_rali")
    with pytest.raises(RuntimeError, match=f"the teacher benchmark process died before it "
                                           f"reported: {cause}"):  # fmt: skip
        bench_rali.measure("teacher", argparse.Namespace(), target=target, context="fork")


def test_bench_learning_runs_every_method_on_the_pretrained_folder_it_is_given(
    benchmarks, tmp_path, capsys
):
    from iqa_lightning.tiny.trained import LMM_FOLDER, TRAINED_DIR

    main = benchmarks("bench_learning").main
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{tmp_path / 'none'}'")):
        main(["--smoke", "--pretrained", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # refused before the first run
    folder = TRAINED_DIR / LMM_FOLDER
    main(["--smoke", "--pretrained", str(folder), "--methods", "rali", "--out", str(tmp_path)])
    # the LoRA teacher runs on the folder; RALI's student reads it through the teacher's run
    config = (tmp_path / "lora_seed0" / ".hydra" / "config.yaml").read_text()
    assert f"pretrained: {folder}" in config, config
    assert (tmp_path / "rali_seed0" / "metrics.json").is_file()
    # under the table, the classical reference on the same (smoke-sized) learning set, then
    # every row's test SRCC per held-out photograph
    printed = capsys.readouterr().out
    assert "nss reference (16 training images" in printed
    per_photo = printed[printed.index("test SRCC per held-out photograph") :].splitlines()
    assert per_photo[1].startswith("| method ") and "gravel" in per_photo[1]
    assert [row.split("|")[1].strip() for row in per_photo[3:6]] == [
        "lora", "rali", "nss reference",
    ]  # fmt: skip
