"""Start-up: a run imports only its backbone family, and Hydra composes the
config once unless an override may set ``hydra.mode``. The timing is a benchmark
(tests/benchmarks/bench_startup.py), never an assertion here."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

IMPORTS = r"""
import sys
import iqa_lightning.train, iqa_lightning.sweeps, iqa_lightning.module
from iqa_lightning.models.backbones import LlavaBackbone, build_tiny_llava
loaded = [m for m in ("iqa_lightning.models.backbones.mplug_owl2",
                      "iqa_lightning.models.backbones.bunny") if m in sys.modules]
print("LOADED", loaded)
from iqa_lightning.models.backbones import FAMILIES
print("FAMILIES", sorted(FAMILIES))
"""


@pytest.mark.slow  # a fresh process; test_imports checks the module-level graph by default
def test_a_llava_run_imports_no_other_family():
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["LOADED"] == "[]", lines
    # The registry still lists every family when asked for.
    assert lines["FAMILIES"] == "['bunny', 'llava', 'mplug_owl2', 'qwen2_vl']"


def test_hydra_reads_the_mode_only_when_an_override_may_set_it(monkeypatch):
    from hydra._internal.hydra import Hydra

    from iqa_lightning import hydra_entry

    original = Hydra.get_mode
    monkeypatch.setattr(sys, "argv", ["train.py", "experiment=smoke", "prompt.size=10"])
    with hydra_entry.reported():
        assert Hydra.get_mode(None, "train", []) is None  # no composition
    assert Hydra.get_mode is original
    monkeypatch.setattr(sys, "argv", ["train.py", "hparams_search=prompt_grid"])
    with hydra_entry.reported():
        assert Hydra.get_mode is original
