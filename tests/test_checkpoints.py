"""Checkpoints: atomic writes, weights_only reads, tuned tensors only, resume into phase 2."""

import collections
import multiprocessing
import os
import signal
import stat
import time
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from safetensors.torch import load_file

from iqa_lightning.callbacks import EpochSeed, StageSchedule
from iqa_lightning.checkpoints import (
    SafeCheckpointIO,
    UnsafeCheckpointError,
    atomic_save,
    load_checkpoint,
    plain,
)
from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.distill.build import load_embeddings, save_embeddings
from iqa_lightning.files import atomic_write, save_tensors
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule


def _write_forever(path):
    """Checkpoints of growing step numbers, one after another, until killed."""
    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's to wait on
    i = 0
    while True:
        atomic_save({"step": i, "x": torch.full((2_000_000,), float(i))}, path)
        i += 1


def test_a_kill_during_writes_never_leaves_a_torn_file(tmp_path):
    """A writer process (forked from this one: torch is imported already) killed with SIGKILL
    while it writes: the file is one whole checkpoint, never a part of one."""
    path = tmp_path / "last.ckpt"
    for delay in (0.4,):
        proc = multiprocessing.get_context("fork").Process(target=_write_forever, args=(path,))
        proc.start()
        try:
            deadline = time.monotonic() + 60
            while not path.exists() and proc.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            assert proc.is_alive(), f"the writer ended on its own (exit code {proc.exitcode})"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        state = load_checkpoint(path)
        assert torch.equal(state["x"], torch.full((2_000_000,), float(state["step"])))


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"version": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"version": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_get_an_ordinary_files_mode_whoever_writes_them(tmp_path, umask):
    """Tuned tensors (safetensors), checkpoints and text files: one mode, the umask's."""
    old = os.umask(umask)
    try:
        save_tensors({"w": torch.ones(3)}, tmp_path / "checkpoints" / "tuned.safetensors")
        save_tensors(
            {"w": torch.ones(3)}, tmp_path / "checkpoints" / "stage1" / "trainable.safetensors"
        )
        save_embeddings(tmp_path / "rali" / "embeddings.safetensors", torch.ones(2, 4), ["a", "b"])
        atomic_save({"step": 1}, tmp_path / "checkpoints" / "last.ckpt")
        (tmp_path / "metrics.json").write_text("{}\n")
    finally:
        os.umask(old)
    modes = {
        str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert len(modes) == 5 and not list(tmp_path.rglob(".partial-*"))
    assert torch.equal(
        load_file(tmp_path / "checkpoints" / "tuned.safetensors")["w"], torch.ones(3)
    )
    assert load_embeddings(tmp_path / "rali" / "embeddings.safetensors")[1] == ["a", "b"]


def test_every_file_of_the_demo_run_has_an_ordinary_files_mode(demo_run):
    out, _ = demo_run
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {
        str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in out.rglob("*")
        if p.is_file()
    }
    assert "checkpoints/tuned.safetensors" in modes
    odd = {path: mode for path, mode in modes.items() if mode != oct(0o666 & ~mask)}
    assert not odd, odd


def test_a_failed_tensor_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "tuned.safetensors"
    save_tensors({"w": torch.ones(2)}, path)

    def broken(f):
        f.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert torch.equal(load_file(path)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.safetensors"]


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*pickled print.*refused"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        SafeCheckpointIO().load_checkpoint(path, weights_only=False)
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_saved_containers_are_plain_and_load_weights_only(tmp_path):
    config = OmegaConf.create({"lora": {"r": 4, "targets": ["q_proj"]}})
    checkpoint = {"hyper_parameters": {"lora": config.lora}, "order": collections.OrderedDict(a=1)}
    SafeCheckpointIO().save_checkpoint(checkpoint, tmp_path / "a.ckpt")
    loaded = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert loaded["hyper_parameters"] == {"lora": {"r": 4, "targets": ["q_proj"]}}
    assert plain((config.lora.targets, 1)) == (["q_proj"], 1)


def test_demo_checkpoints_hold_tuned_tensors_and_training_state_only(demo_run):
    out, _ = demo_run
    files = sorted((out / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in [f.name for f in files] and len(files) >= 2
    for ckpt in files:
        state = load_checkpoint(ckpt)
        assert set(state["state_dict"]) == {
            f"prompt.pad_{s}" for s in ("up", "down", "left", "right")
        }
        assert state["optimizer_states"] and "phase_index" in state
    assert not list((out / "checkpoints").glob(".partial-*"))


SGD = partial(torch.optim.SGD, lr=5.0, momentum=0.9)
ADAM = partial(torch.optim.AdamW, lr=1e-2)


def two_phase_module():
    torch.manual_seed(0)
    return IQAModule(
        build_tiny_llava(),
        PaddingPrompt(64, size=8, init_scale=0.5),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[
            {"name": "stage1", "trainable": ["lora"], "epochs": 1, "optimizer": ADAM},
            {"name": "stage2", "trainable": ["prompt"], "epochs": None, "optimizer": SGD},
        ],
        lora={"r": 4, "alpha": 8, "dropout": 0.1},
    )


def fit(out, cache_dir, epochs, ckpt_path=None):
    module = two_phase_module()
    data = SyntheticDataModule(cache_dir=cache_dir, n_refs=4, image_size=64,
                               batch_size=8, seed=3)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, accelerator="cpu",
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        plugins=[SafeCheckpointIO()], default_root_dir=out,
        callbacks=[
            StageSchedule(str(out)), EpochSeed(7),
            ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0),
        ],
    )  # fmt: skip
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module, trainer


def test_resume_into_phase_two_restores_its_groups_and_optimiser(tmp_path, cache_dir):
    full, _ = fit(tmp_path / "full", cache_dir, epochs=3)
    fit(tmp_path / "cut", cache_dir, epochs=2)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["phase_index"] == 1
    resumed, trainer = fit(tmp_path / "cut", cache_dir, epochs=3, ckpt_path=str(last))

    assert resumed.phase["name"] == "stage2" and resumed.trainable_groups == ["prompt"]
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["prompt"]
    expected, got = full.tuned_state_dict(), resumed.tuned_state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():  # MKL rounding may differ with memory alignment
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
