"""The Lightning private API the package relies on is there, as :mod:`iqa_lightning.compat`
expects it; a Lightning upgrade that changes it fails here, not in the middle of a run."""

import importlib
import inspect

import pytest
from lightning.pytorch.strategies import SingleDeviceStrategy

from iqa_lightning.compat import PRIVATE_API, rewrap_ddp


@pytest.mark.parametrize(("owner", "attribute", "params"), PRIVATE_API)
def test_private_lightning_api_exists_with_the_expected_signature(owner, attribute, params):
    module_name, _, class_name = owner.rpartition(".")
    try:
        holder = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        holder = importlib.import_module(owner)
    assert hasattr(holder, attribute), f"{owner}.{attribute} is gone"
    found = tuple(inspect.signature(getattr(holder, attribute)).parameters)
    assert found == params, f"{owner}.{attribute}{found}, expected {params}"


def test_the_compat_module_is_the_only_user_of_private_strategy_api():
    from iqa_lightning import module, strategies
    from iqa_lightning.callbacks import stages

    for source in map(inspect.getsource, (stages, module)):
        for _, attribute, _ in PRIVATE_API:
            assert attribute not in source
    # The FSDP strategy overrides FSDPStrategy._setup_model (checked above); nothing else.
    assert "_update_dataloader" not in inspect.getsource(strategies)


def test_rewrap_is_a_no_op_off_ddp():
    assert rewrap_ddp(SingleDeviceStrategy("cpu")) is False
