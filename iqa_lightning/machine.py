"""What this machine offers a run: usable CPU cores (the process's affinity, within a cgroup CPU
quota such as a container's), and from them torch's thread count and the DataLoader worker
default (``num_workers: auto``).

On 2 cores, loader workers cost more than they give (decoding in the main process keeps up with
a small model), so ``auto`` is 0 there; with more cores it leaves one core per process to the
model. torch's own default counts every physical core of the host, which in a container with a
2-CPU quota on a 64-core host means 64 threads fighting for 2 CPUs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
#: Processes of this run on this machine (set by the training driver from ``trainer``).
PROCESSES_ENV = "IQA_LOCAL_PROCESSES"
#: Most DataLoader workers ``auto`` gives one process.
MAX_AUTO_WORKERS = 8


def usable_cpus() -> int:
    """CPU cores this process may use: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def torch_threads(processes: int = 1) -> int:
    """Intra-op threads for each of ``processes`` processes sharing the machine."""
    return max(1, usable_cpus() // max(1, processes))


def loader_workers(processes: int = 1) -> int:
    """``num_workers: auto``: 0 with 2 cores or fewer per process, else one less than them."""
    cores = usable_cpus() // max(1, processes)
    return 0 if cores <= 2 else min(MAX_AUTO_WORKERS, cores - 1)


def resolve_workers(value: int | str, key: str) -> int:
    """``num_workers`` from a config value: ``auto`` (:func:`loader_workers`) or an int >= 0.

    Raises:
        ValueError: Naming ``key``.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return loader_workers(int(os.environ.get(PROCESSES_ENV, 1)))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be 'auto' or an integer >= 0, got {value!r}")
    return value


def set_torch_threads(value: int | str = "auto", processes: int = 1) -> int:
    """Set torch's intra-op thread count: ``auto`` (:func:`torch_threads`) or a number."""
    import torch

    threads = torch_threads(processes) if value in (None, "auto") else int(value)
    if threads < 1:
        raise ValueError(f"threads must be 'auto' or an integer >= 1, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def local_processes(trainer_cfg) -> int:
    """Processes a Trainer config runs on this machine: ``devices`` under a DDP / FSDP
    strategy, else 1."""
    strategy = str((trainer_cfg or {}).get("strategy") or "").lower()
    devices = (trainer_cfg or {}).get("devices")
    if "ddp" not in strategy and "fsdp" not in strategy:
        return 1
    if devices in ("auto", -1, "-1"):
        import torch

        devices = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return devices if isinstance(devices, int) and devices > 1 else 1


def share_machine(cfg) -> int:
    """Set torch's threads (``threads``) for this run's processes and record their count for
    ``num_workers: auto``; returns the thread count."""
    processes = local_processes(cfg.get("trainer"))
    os.environ[PROCESSES_ENV] = str(processes)
    return set_torch_threads(cfg.get("threads", "auto"), processes)
