"""notebooks/inference_dynamics.ipynb: stored without outputs, and its cells run as plain Python
on analysis files written by the analyses' own writers for a one-stage and a two-stage run."""

from pathlib import Path
from types import SimpleNamespace

import matplotlib
import torch

from iqa_lightning.analysis import attention, instability, logit_lens
from tests.test_analyze import WEIGHTS, WORDS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inference_dynamics.ipynb"


def write_analyses(run: Path, described: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    folder = run / "analysis"
    head = SimpleNamespace(words=WORDS, weights=torch.tensor(WEIGHTS))
    sampling = instability.Sampling(samples=4, temperature=1.0)
    result = instability.from_logits(torch.randn(6, 5, generator=gen), head,
                                     [f"i{n}" for n in range(6)], sampling)  # fmt: skip
    if described:
        result.descriptions = [["Strong blur.", "Sharp and clean.", "Noisy.", "Clear."]] * 6
    instability.write(result, folder)
    layers = 3
    probs = torch.softmax(torch.randn(layers, 5, generator=gen), -1)
    lens = logit_lens.LogitLens(WORDS, ["i0"], probs * 0.5, probs, [[("a", 1, 0.5)]] * layers,
                                [("i0", [[("a", 0.5)]] * layers)])  # fmt: skip
    logit_lens.write(lens, folder)
    mass = torch.rand(6, layers, 3, generator=gen, dtype=torch.float64) / 3
    positions = torch.tensor([[16.0, 9.0, 20.0 if described else 0.0]] * 6, dtype=torch.float64)
    if not described:
        mass[..., 2] = 0
    tokens = [[("question", "quality", 0.4), ("image", "<image>", 0.3)]] * 6
    attention.write(
        attention.Attention([f"i{n}" for n in range(6)], mass, positions, tokens), folder
    )


def test_notebook_is_stripped_and_its_cells_run_on_analysis_files(tmp_path, monkeypatch):
    import nbformat

    matplotlib.use("Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    one, two = tmp_path / "one", tmp_path / "two"
    write_analyses(one, described=False, seed=0)
    write_analyses(two, described=True, seed=1)
    monkeypatch.setenv("IQA_ONE_STAGE", str(one))
    monkeypatch.setenv("IQA_TWO_STAGE", str(two))
    import matplotlib.pyplot as plt

    plt.close("all")  # figures other tests left open are not the notebook's
    printed = []
    namespace = {"print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    for cell in code:
        exec(compile(cell.source, str(NOTEBOOK), "exec"), namespace)
    assert len(plt.get_fignums()) == 3
    plt.close("all")
    rates = namespace["summary"]
    assert rates["one-stage"]["contradiction_rate"] is None
    assert 0 < rates["two-stage"]["contradiction_rate"] < 1
    assert namespace["lens"].shape == (3, 5)
    assert any("'description'" in line for line in printed)
