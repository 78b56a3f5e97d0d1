"""protocol=koniq_only | mix3 | kadid_only: the papers' tables with our row, each published row
with its source and the difference to ours."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from iqa_lightning.errors import ConfigError
from iqa_lightning.eval import mixed_datasets, mixed_roots, split_for
from iqa_lightning.protocols import check_protocol, protocol_table
from iqa_lightning.train import CONFIG_DIR
from tests.conftest import run_main
from tests.data.fixtures import write_agiqa, write_kadid, write_koniq
from tests.data.fixtures_more import write_clive, write_pipal, write_spaq

PROTOCOLS = sorted(p.stem for p in (Path(CONFIG_DIR) / "protocol").glob("*.yaml"))
DATASETS = {p.stem for p in (Path(CONFIG_DIR) / "dataset").glob("[!_]*.yaml")}


def load(name):
    return OmegaConf.load(Path(CONFIG_DIR) / "protocol" / f"{name}.yaml")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_names_sources_and_test_sets_we_read(name):
    spec = check_protocol(load(name))
    assert spec["name"] == name and set(spec["test"]) <= DATASETS and set(spec["train"]) <= DATASETS
    if not name.startswith("briqa_"):  # BRIQA's own sets: tests/test_briqa.py
        assert spec["test"] == ["koniq", "spaq", "kadid", "pipal", "clive", "agiqa"]
    for row in spec["published"]:
        assert row["source"] and all(
            0 < v <= 1 for f in row["figures"].values() for v in f.values()
        )
    assert spec["not_found"], "the methods left out are named"


def test_table_puts_ours_beside_each_published_row_with_the_difference():
    spec = load("mix3")
    results = {t: {"srcc": 0.5, "plcc": 0.6, "plcc_logistic4": 0.7, "n": 4, "split": "test"}
               for t in spec.test}  # fmt: skip
    table, data = protocol_table(spec, results, ours="run1")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].split(" | ")[2:4] == ["KonIQ SRCC", "KonIQ PLCC"]
    assert lines[0].rstrip(" |").endswith("AGIQA-3K PLCC")
    qalign = data["published"][0]
    assert qalign["figures"]["koniq"] == {"srcc": 0.937, "plcc": 0.945}
    assert qalign["difference"]["koniq"]["srcc"] == pytest.approx(0.5 - 0.937)
    assert qalign["difference"]["pipal"]["srcc"] is None  # not reported: left out, not guessed
    assert "| run1 | this run (PLCC raw) | 0.500 | 0.600 |" in table
    assert "| -0.437 | -0.345 |" in table and "| – | – |" in table
    logistic = OmegaConf.merge(spec, {"published": [{**spec.published[0], "plcc": "logistic4"}]})
    _, data = protocol_table(logistic, results)
    assert data["published"][0]["difference"]["koniq"]["plcc"] == pytest.approx(0.7 - 0.945)


def test_a_row_without_source_or_a_missing_test_set_is_refused():
    spec = load("koniq_only")
    bad = OmegaConf.merge(spec, {"published": [{"method": "X", "source": "", "figures": {}}]})
    with pytest.raises(ConfigError, match=r"published\[0\] has no source"):
        check_protocol(bad)
    with pytest.raises(ConfigError, match=r"no figures for test sets \['agiqa'\]"):
        protocol_table(spec, {t: {"srcc": 0.1, "plcc": 0.1} for t in spec.test[:-1]})


@pytest.fixture(scope="module")
def protocol_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("protocol_data")
    return {
        "koniq": write_koniq(base / "koniq", n_images=10),
        "spaq": write_spaq(base / "spaq", n_images=8),
        "kadid": write_kadid(base / "kadid", n_refs=4, n_types=1, n_levels=2),
        "pipal": write_pipal(base / "pipal", n_refs=3, per_ref=3),
        "clive": write_clive(base / "clive", n_images=8),
        "agiqa": write_agiqa(base / "agiqa", n_images=8),
    }


def test_a_mix_runs_datasets_are_scored_on_their_test_splits_from_its_own_roots(tmp_path):
    run_cfg = OmegaConf.create(
        {
            "dataset": {
                "name": "mix",
                "datasets": ["koniq", "kadid"],
                "roots": {"koniq": str(tmp_path / "k"), "kadid": None},
                "context": {
                    "paths": {"data_dir": str(tmp_path), "cache_dir": str(tmp_path / "c")},
                    "model": {"image_size": 32, "resize": "squash"},
                    "seed": 3,
                },
            }
        }
    )
    assert mixed_datasets(run_cfg) == ["koniq", "kadid"]
    assert mixed_roots(run_cfg) == {"koniq": str(tmp_path / "k"), "kadid": f"{tmp_path}/kadid10k"}
    for name, split in (("koniq", "test"), ("kadid", "test"), ("pipal", "all")):
        assert split_for("auto", OmegaConf.create({"name": name}), run_cfg) == split


@pytest.mark.slow  # scores six datasets with the demo run; its parts run by default in
# test_table_puts_ours_beside_each_published_row_with_the_difference (the table) and
# test_a_mix_runs_datasets_are_scored_on_their_test_splits_from_its_own_roots (eval's choices)
def test_eval_protocol_writes_the_papers_table_for_a_run(demo_run, protocol_roots, run_env, capsys):
    run, _ = demo_run
    roots = ", ".join(f"{k}: '{v}'" for k, v in protocol_roots.items())
    ended = run_main(
        "iqa_lightning.eval",
        [f"run={run}", "protocol=koniq_only", f"eval.roots={{{roots}}}", "eval.bootstrap=0"],
        capsys,
        env=run_env,
    )
    assert ended.code == 0, ended.text[-3000:]
    data = json.loads((run / "protocol_koniq_only.json").read_text())
    measured = json.loads((run / "eval_protocol_koniq_only.json").read_text())
    assert data["test"] == list(measured) == ["koniq", "spaq", "kadid", "pipal", "clive", "agiqa"]
    for test in data["test"]:
        assert data["ours"]["figures"][test]["srcc"] == pytest.approx(measured[test]["srcc"])
        assert data["ours"]["figures"][test]["split"] == "all"  # the demo trained on none of them
    vp = data["published"][0]
    assert vp["difference"]["koniq"]["srcc"] == pytest.approx(measured["koniq"]["srcc"] - 0.852)
    table = (run / "protocol_koniq_only.md").read_text()
    assert f"| {run.name} | this run" in table and "mplug2-vp-for-nriqa" in table


def zero_shot_eval(roots, out, run_env, capsys, *more):
    """``python -m iqa_lightning.eval model=tiny_llava protocol=koniq_only`` on ``roots``, into
    ``eval.out=out`` (None: the default folder, found under the run root): its protocol JSON
    and measured figures."""
    given = ", ".join(f"{k}: '{v}'" for k, v in roots.items())
    ended = run_main(
        "iqa_lightning.eval",
        ["model=tiny_llava", "protocol=koniq_only", f"eval.roots={{{given}}}",
         "eval.bootstrap=0", "trainer=cpu", *([f"eval.out={out}"] if out else []), *more],
        capsys,
        env=run_env,
    )  # fmt: skip
    assert ended.code == 0, ended.text[-3000:]
    if out is None:  # outputs/eval/<time>_<model>/ (each test run's root is its own)
        (out,) = Path(run_env["IQA_ROOT"]).glob("outputs/eval/*_tiny_llava")
    data = json.loads((out / "protocol_koniq_only.json").read_text())
    measured = json.loads((out / "eval_protocol_koniq_only.json").read_text())
    assert data["test"] == list(measured)
    assert data["ours"]["name"] == "tiny_llava" and data["ours"]["origin"] == "zero-shot"
    for test in data["test"]:
        assert data["ours"]["figures"][test]["srcc"] == pytest.approx(measured[test]["srcc"])
        assert (out / f"predictions_eval_{test}.csv").is_file()
    vp = data["published"][0]  # the visual-prompt row: KonIQ figures only
    assert vp["difference"]["koniq"]["srcc"] == pytest.approx(measured["koniq"]["srcc"] - 0.852)
    table = (out / "protocol_koniq_only.md").read_text()
    assert "| tiny_llava | zero-shot (PLCC raw) | " in table and "mplug2-vp-for-nriqa" in table
    assert "| tiny_llava − Visual prompt" in table
    return data, measured, out


def test_eval_scores_a_model_preset_zero_shot_under_a_protocol(protocol_roots, run_env, capsys,
                                                               tmp_path):  # fmt: skip
    """No run: the preset's row beside the published ones, in the default folder
    ``outputs/eval/<time>_<model>/``; the protocol's training set (KonIQ) on its test split,
    another set (SPAQ) whole. Two of the six test sets (the published row reports KonIQ only);
    all six, into ``eval.out``: the slow test below."""
    env = {**run_env, "IQA_ROOT": str(tmp_path)}
    data, measured, out = zero_shot_eval(
        protocol_roots, None, env, capsys, "protocol.test=[koniq,spaq]"
    )
    assert data["test"] == ["koniq", "spaq"]
    assert {t: f["split"] for t, f in measured.items()} == {"koniq": "test", "spaq": "all"}
    assert measured["spaq"]["n"] == 8 and measured["koniq"]["n"] < 10  # KonIQ's test split only
    assert (out / "eval.log").is_file()  # Hydra's log in the output folder too


@pytest.mark.slow  # six datasets; two of them by default just above
def test_eval_scores_a_model_preset_zero_shot_on_all_six_test_sets(protocol_roots, run_env,
                                                                   capsys, tmp_path):  # fmt: skip
    data, measured, _ = zero_shot_eval(protocol_roots, tmp_path / "tables", run_env, capsys)
    assert data["test"] == ["koniq", "spaq", "kadid", "pipal", "clive", "agiqa"]
    splits = {test: measured[test]["split"] for test in data["test"]}
    assert splits == {"koniq": "test", **{t: "all" for t in data["test"][1:]}}


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run=x", "model=tiny_llava"], "give run=<run folder> or model=<preset>, not both"),
        (["protocol=koniq_only"], "run=<run folder> or model=<preset> is required"),
        (["run=x", "score=qalign"], "drop ['score=qalign']"),
    ],
)
def test_eval_takes_exactly_one_of_run_and_model(args, line, run_env, capsys):
    ended = run_main("iqa_lightning.eval", args, capsys, env=run_env)
    assert ended.code == 1 and ended.err.strip().count("\n") == 0, ended.text[-2000:]
    assert ended.last_line().startswith("error: ") and line in ended.last_line()


def test_a_zero_shot_eval_names_its_datasets(run_env, capsys, tmp_path):
    ended = run_main("iqa_lightning.eval", ["model=tiny_llava", f"eval.out={tmp_path}"], capsys,
                     env=run_env)  # fmt: skip
    assert ended.code == 1, ended.text[-2000:]
    assert "model=<preset> has no dataset of its own" in ended.last_line()
