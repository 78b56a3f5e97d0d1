"""eval's table and files carry what a generating scorer adds: its parse failures per dataset."""

import torch

from iqa_lightning.eval import markdown_table
from iqa_lightning.models.scorer import ScoreOutput
from iqa_lightning.scorer import RowCollector


def test_the_table_gains_a_parse_failures_column_only_where_a_scorer_counts_them():
    figures = {"srcc": 0.5, "plcc": 0.6, "krcc": 0.4, "plcc_logistic4": 0.6, "plcc_logistic5": 0.6,
               "n": 10, "split": "test"}
    plain = markdown_table({"koniq": figures})
    assert "parse_failures" not in plain.splitlines()[0]
    table = markdown_table({"koniq": {**figures, "parse_failures": 3}, "spaq": figures})
    header, _, koniq, spaq = table.splitlines()
    assert header.endswith("| n | parse_failures | split |")
    assert koniq.endswith("| 10 | 3 | test |") and spaq.endswith("| 10 | None | test |")


def test_the_row_collector_names_the_extras_it_kept():
    collector = RowCollector()
    collector.rows, collector.extra_keys = [], []
    batch = {"pixels": torch.zeros(2, 3, 4, 4), "image_id": ["a", "b"]}
    output = ScoreOutput(torch.tensor([0.1, 0.9]),
                         extras={"answer": ["x", "<answer>4</answer>"], "parse_ok": [False, True]})
    collector.write_on_batch_end(None, None, output, [0, 1], batch, 0)
    assert collector.extra_keys == ["answer", "parse_ok"]
    assert [r["parse_ok"] for r in collector.rows] == [False, True]
    assert collector.rows[1] == {"index": 1, "image_id": "b", "score": collector.rows[1]["score"],
                                 "answer": "<answer>4</answer>", "parse_ok": True}
