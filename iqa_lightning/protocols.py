"""The literature's evaluation protocols by name (``protocol=koniq_only | mix3 | kadid_only``):
our figures beside the published ones, in the papers' column order.

A protocol (``conf/protocol/<name>.yaml``) names the training sets, the test sets in the
papers' column order, the figures the papers report (SRCC, PLCC) and the published rows, each
with its source (paper table or model card) and which PLCC it reports (``raw``, or
``logistic4``: after the 4-parameter logistic fit). :func:`protocol_table` puts the figures
:mod:`iqa_lightning.eval` measured for each test set beside them, with the difference to each
published row (ours minus theirs; our PLCC of the same kind as the row's), and
:func:`write_protocol` writes ``protocol_<name>.md`` and ``protocol_<name>.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from iqa_lightning.errors import ConfigError

__all__ = [
    "PLCC_KINDS",
    "check_protocol",
    "protocol_table",
    "protocol_test_sets",
    "protocol_train_sets",
    "write_protocol",
]

#: How a published PLCC was computed: on the raw scores, or after the 4-parameter logistic.
PLCC_KINDS = {"raw": "plcc", "logistic4": "plcc_logistic4"}
#: The figures a protocol may report, as eval names them.
FIGURES = ("srcc", "plcc")
MISSING = "–"


def _plain(node: Any) -> Any:
    if hasattr(node, "items"):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)) or type(node).__name__ == "ListConfig":
        return [_plain(v) for v in node]
    return node


def check_protocol(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol as plain data, checked.

    Raises:
        ConfigError: A missing key, a metric other than SRCC / PLCC, a published row without a
            source or with a test set the protocol does not name.
    """
    spec = _plain(protocol)
    name = spec.get("name") or "?"
    for key in ("name", "train", "test", "columns", "metrics"):
        if not spec.get(key):
            raise ConfigError(f"protocol={name}: protocol.{key} is missing or empty")
    unknown = [m for m in spec["metrics"] if m not in FIGURES]
    if unknown:
        raise ConfigError(f"protocol={name}: protocol.metrics {unknown}; one of {list(FIGURES)}")
    missing = [t for t in spec["test"] if t not in spec["columns"]]
    if missing:
        raise ConfigError(f"protocol={name}: protocol.columns has no heading for {missing}")
    for index, row in enumerate(spec.get("published") or []):
        where = f"protocol={name}: protocol.published[{index}]"
        for key in ("method", "source"):
            if not row.get(key):
                raise ConfigError(f"{where} has no {key}: every published row names its source")
        if row.get("plcc", "raw") not in PLCC_KINDS:
            raise ConfigError(f"{where}.plcc={row.get('plcc')!r}; one of {list(PLCC_KINDS)}")
        extra = sorted(set(row.get("figures") or {}) - set(spec["test"]))
        if extra:
            raise ConfigError(f"{where} has figures for {extra}, not test sets of the protocol")
    return spec


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def protocol_table(
    protocol: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    ours: str = "ours",
    origin: str = "this run",
) -> tuple[str, dict[str, Any]]:
    """Our row, each published row and its difference to ours, as markdown and as JSON data.

    Args:
        protocol: A ``protocol`` config (:func:`check_protocol`).
        results: :mod:`iqa_lightning.eval`'s figures by test set (``srcc``, ``plcc``,
            ``plcc_logistic4``, ``n``, ``split``).
        ours: The name of our row (the run folder, or the model preset scored zero-shot).
        origin: Where our row comes from, in its source column (``this run``, ``zero-shot``).

    Raises:
        ConfigError: A test set of the protocol has no figures in ``results``.
    """
    spec = check_protocol(protocol)
    tests, metrics = list(spec["test"]), list(spec["metrics"])
    absent = [t for t in tests if t not in results]
    if absent:
        raise ConfigError(f"protocol={spec['name']}: no figures for test sets {absent}")
    headings = [f"{spec['columns'][t]} {m.upper()}" for t in tests for m in metrics]
    mine = {t: {k: _number(results[t].get(k)) for k in (*FIGURES, "plcc_logistic4")} for t in tests}

    def ours_of(test: str, metric: str, kind: str) -> float | None:
        return mine[test]["plcc_logistic4" if metric == "plcc" and kind == "logistic4" else metric]

    def cell(value: float | None, signed: bool = False) -> str:
        return MISSING if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    lines = [
        "| method | source | " + " | ".join(headings) + " |",
        "|---" * (len(headings) + 2) + "|",
        f"| {ours} | {origin} (PLCC raw) | "
        + " | ".join(cell(ours_of(t, m, "raw")) for t in tests for m in metrics) + " |",
    ]  # fmt: skip
    data: dict[str, Any] = {
        "protocol": spec["name"],
        "train": spec["train"],
        "test": tests,
        "columns": {t: spec["columns"][t] for t in tests},
        "metrics": metrics,
        "ours": {"name": ours, "origin": origin, "figures": {t: {**mine[t], "n": results[t].get("n"),
                                                "split": results[t].get("split")} for t in tests}},
        "published": [],
        "not_found": spec.get("not_found") or [],
    }  # fmt: skip
    for row in spec.get("published") or []:
        kind = row.get("plcc", "raw")
        figures = {t: {m: _number((row.get("figures") or {}).get(t, {}).get(m)) for m in metrics}
                   for t in tests}  # fmt: skip
        difference = {
            t: {m: None if figures[t][m] is None or ours_of(t, m, kind) is None
                else ours_of(t, m, kind) - figures[t][m] for m in metrics}
            for t in tests
        }  # fmt: skip
        lines.append(
            f"| {row['method']} | {row['source']} (PLCC {kind}) | "
            + " | ".join(cell(figures[t][m]) for t in tests for m in metrics) + " |"
        )  # fmt: skip
        lines.append(
            f"| {ours} − {row['method']} | ours with PLCC {kind} | "
            + " | ".join(cell(difference[t][m], signed=True) for t in tests for m in metrics)
            + " |"
        )  # fmt: skip
        data["published"].append(
            {"method": row["method"], "source": row["source"], "plcc": kind,
             "figures": figures, "difference": difference}
        )  # fmt: skip
    title = f"## protocol {spec['name']}: {spec.get('title', '')}".rstrip(": ")
    splits = ", ".join(f"{spec['columns'][t]} {results[t].get('split')}" for t in tests)
    notes = [
        title,
        "",
        f"Trained on {', '.join(spec['train'])}; images scored per test set: {splits}. "
        f"{MISSING}: not reported by that source.",
        "",
        *lines,
    ]
    if data["not_found"]:
        notes += ["", "Left out (no source found for their figures under this protocol): "
                  + "; ".join(str(x) for x in data["not_found"]) + "."]  # fmt: skip
    return "\n".join(notes) + "\n", data


def write_protocol(
    folder: str | Path,
    protocol: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    ours: str = "ours",
    origin: str = "this run",
) -> tuple[Path, Path]:
    """Write ``protocol_<name>.md`` and ``protocol_<name>.json`` into ``folder``
    (:func:`protocol_table`); returns their paths."""
    table, data = protocol_table(protocol, results, ours, origin)
    folder = Path(folder)
    md = folder / f"protocol_{data['protocol']}.md"
    md.write_text(table)
    path = folder / f"protocol_{data['protocol']}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return md, path


def protocol_test_sets(protocol: Mapping[str, Any]) -> Sequence[str]:
    """The protocol's test sets (dataset options), in the papers' column order."""
    return list(check_protocol(protocol)["test"])


def protocol_train_sets(protocol: Mapping[str, Any]) -> Sequence[str]:
    """The protocol's training sets (dataset options): a model scored zero-shot under the
    protocol is tested on their test splits, as the papers test their checkpoints."""
    return list(check_protocol(protocol)["train"])
