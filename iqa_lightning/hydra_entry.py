"""How the drivers enter Hydra: its own errors on one line, and the config composed once.

Hydra's own errors (an unknown option, a misspelt key, an override that does not parse, an
output folder that cannot be written) on one ``error:`` line with a hint that works.

Hydra prints these over several lines, some with a hint that fails later
(``trainer.max_epoch=1``: "To append to your config use +trainer.max_epoch=1", which the Trainer
then refuses). :func:`reported` wraps a driver's ``hydra.main`` entry point: errors met while the
config is composed and the output folder made end as

    error: prompt=paddng: no such option in prompt; did you mean prompt=padding? (options: ...)
    error: trainer.max_epoch: no such key; did you mean trainer.max_epochs?

and exit code 1. Errors of the task itself keep their usual path (:mod:`iqa_lightning.cli`).
``IQA_DEBUG=1`` / ``HYDRA_FULL_ERROR=1`` keep Hydra's full output.

Hydra composes the config twice before a run: once to read ``hydra.mode`` from it, once for the
job. Where nothing on the command line can set ``hydra.mode`` (no ``hparams_search=``, no
``hydra.mode=``), :func:`reported` skips the first composition (the mode comes from ``-m``).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import hydra

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.cli import TASK_MARK, debug_requested, report_user_errors
from iqa_lightning.quiet import quiet

#: Hydra's composition-time error types, by name.
COMPOSITION_ERRORS = (
    "MissingConfigException",
    "ConfigCompositionException",
    "OverrideParseException",
    "SearchPathException",
)


def _closest(word: str, options: list[str]) -> str | None:
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


def _missing_option(exc: BaseException) -> str:
    wanted = str(getattr(exc, "missing_cfg_file", "") or "")
    found = re.search(r"Could not find '([^']+)'", str(exc))
    wanted = wanted or (found.group(1) if found else "")
    group, _, option = wanted.rpartition("/")
    given = getattr(exc, "options", None) or []
    options = sorted(str(o) for o in given if not str(o).startswith("_"))
    if not group or not options:
        return str(exc).strip().splitlines()[0]
    hint = _closest(option, options)
    mean = f"; did you mean {group}={hint}?" if hint else ""
    return f"{group}={option}: no such option in {group}{mean} (options: {', '.join(options)})"


def _unknown_key(exc: BaseException) -> str | None:
    cause = exc.__cause__
    found = re.search(r"Could not override '([^']+)'", str(exc))
    if cause is None or found is None or type(cause).__name__ not in (
        "ConfigKeyError", "ConfigAttributeError",
    ):  # fmt: skip
        return None
    key = str(getattr(cause, "full_key", "") or found.group(1))  # the level that is missing
    parent = getattr(cause, "parent_node", None)
    keys = [str(k) for k in parent.keys()] if hasattr(parent, "keys") else []
    prefix, _, name = key.rpartition(".")
    hint = _closest(name, keys)
    if hint:
        return f"{key}: no such key; did you mean {prefix + '.' if prefix else ''}{hint}?"
    where = f" in {prefix}" if prefix else ""
    return f"{key}: no such key{where} (keys: {', '.join(sorted(keys)[:20])})"


def error_message(exc: BaseException) -> str | None:
    """One line for a Hydra composition error or an unwritable output folder, else None."""
    name = type(exc).__name__
    if name == "MissingConfigException":
        return _missing_option(exc)
    if name == "ConfigCompositionException":
        return _unknown_key(exc) or " ".join(str(exc).split())
    if name == "OverrideParseException":
        first = str(exc).strip().splitlines()[0]
        bad = _unparsable_arg()
        return f"cannot parse the override {bad!r}: {first}" if bad else f"cannot parse: {first}"
    if name in COMPOSITION_ERRORS:
        return " ".join(str(exc).split())
    if isinstance(exc, OSError) and not getattr(exc, TASK_MARK, False):
        target = exc.filename or "the output folder"
        why = (exc.strerror or str(exc)).lower()
        return (
            f"cannot make or write {target}: {why}; choose a writable place "
            "(hydra.run.dir=..., or paths.root_dir=... / IQA_ROOT)"
        )
    return None


def _unparsable_arg() -> str | None:
    """The first command-line override Hydra's grammar refuses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:
            return arg
    return None


def _reraise(exc: BaseException) -> None:
    raise exc


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Within the block, Hydra's composition errors end with one ``error:`` line (exit 1)."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func):
        try:
            return func()
        except Exception as exc:
            task = getattr(exc, TASK_MARK, False)  # raised by the task: cli's path
            line = None if debug_requested() or task else error_message(exc)
            if line is None:
                return original(functools.partial(_reraise, exc))  # Hydra's own report
            print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(1)

    from hydra._internal.hydra import Hydra

    get_mode = Hydra.get_mode
    hydra_utils.run_and_report = run_and_report
    if not mode_may_be_set(sys.argv[1:]):
        Hydra.get_mode = lambda self, config_name, overrides: None  # the mode of -m / none
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
        Hydra.get_mode = get_mode


#: Command-line keys that may set ``hydra.mode`` (the sweep presets set MULTIRUN; no other
#: group does: tests/test_safe_runs.py checks).
MODE_KEYS = ("hparams_search", "hydra.mode")


def mode_may_be_set(args: list[str]) -> bool:
    """Whether an override may set ``hydra.mode`` (so Hydra must compose once to read it)."""
    keys = [a.partition("=")[0].lstrip("+~") for a in args if "=" in a]
    return any(k in MODE_KEYS for k in keys)


def driver(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorator: ``task(cfg)`` as a driver's Hydra main (``conf/<config_name>.yaml`` composed,
    each library line once with no known noise, a user error as one ``error:`` line).

    Hydra names the job after ``task``'s module, as when each driver wrote its own main.
    """

    def wrap(task: Callable[[Any], Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def quieted(cfg: Any) -> Any:
            quiet()  # each Lightning line once, no tips or known library noise
            return task(cfg)

        main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
        return main(report_user_errors(quieted))

    return wrap
