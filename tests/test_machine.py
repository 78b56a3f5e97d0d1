"""Thread and loader-worker defaults from the cores this process may use."""

import pytest
import torch

from iqa_lightning import machine


@pytest.mark.parametrize("cores,processes,workers,threads", [
    (2, 1, 0, 2), (1, 1, 0, 1), (4, 1, 3, 4), (16, 2, 7, 8), (64, 1, 8, 64), (2, 2, 0, 1),
])  # fmt: skip
def test_auto_workers_and_threads(monkeypatch, cores, processes, workers, threads):
    monkeypatch.setattr(machine, "usable_cpus", lambda: cores)
    assert machine.loader_workers(processes) == workers
    assert machine.torch_threads(processes) == threads


def test_a_cgroup_quota_caps_the_cores(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")  # two CPUs' worth of time
    monkeypatch.setattr(machine, "CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert machine.usable_cpus() == 2
    quota.write_text("max 100000\n")
    assert machine.usable_cpus() == 64


def test_share_machine_sets_threads_and_auto_workers(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr(machine, "usable_cpus", lambda: 8)
    before = torch.get_num_threads()
    try:
        cfg = OmegaConf.create(
            {
                "threads": "auto",
                "trainer": {
                    "devices": 2,
                    "strategy": {"_target_": "iqa_lightning.strategies.DDPStrategy"},
                },
            }
        )
        assert machine.share_machine(cfg) == 4 and torch.get_num_threads() == 4
        assert machine.resolve_workers("auto", "dataset.num_workers") == 3
        assert machine.resolve_workers(0, "dataset.num_workers") == 0
        with pytest.raises(ValueError, match="dataset.num_workers must be 'auto' or an integer"):
            machine.resolve_workers(-1, "dataset.num_workers")
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv(machine.PROCESSES_ENV, raising=False)
