"""RALI's teacher asked as Q-Insight is asked (bytedance/Q-Insight src/eval/demo_score.py:33-43,
71-77), its texts parsed for a score with the failures counted, and CLIP frozen while scoring."""

import json
import logging

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from iqa_lightning.data.dataset import LabelledImage
from iqa_lightning.distill.teacher import Teacher, build_teacher, generate_texts, parse_report
from iqa_lightning.distill.texts import TextCache
from iqa_lightning.errors import ConfigError
from iqa_lightning.models import generation
from iqa_lightning.models.generation import AnswerParser
from tests.conftest import REPO

CONF = REPO / "conf"
Q_INSIGHT = OmegaConf.to_container(OmegaConf.load(CONF / "teacher/q_insight.yaml").generation)


def images(tmp_path, n):
    items = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20 + 4 * i, 24, 3), 30 * i, dtype=np.uint8)).save(path)
        items.append(LabelledImage(f"{i}.png", str(path), 3.0, 0.5))
    return items


def test_the_q_insight_teacher_is_asked_as_its_demo_and_as_method_q_insight():
    method = OmegaConf.load(CONF / "method/q_insight.yaml").method.generation
    assert Q_INSIGHT == OmegaConf.to_container(method)
    prompt, sampling = Q_INSIGHT["prompt"], Q_INSIGHT["sampling"]
    assert (
        "<think> reasoning process here </think><answer> answer here </answer>" in prompt["system"]
    )
    assert prompt["question"].startswith("What is your overall rating on the quality of this pic")
    assert prompt["image_first"] is False  # the question, then the image (demo_score.py:50-56)
    assert {k: sampling[k] for k in ("do_sample", "temperature", "top_k", "top_p")} == {
        "do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 0.95}  # fmt: skip
    assert sampling["max_new_tokens"] == 1024 and sampling["num_samples"] == 1
    assert OmegaConf.load(CONF / "teacher/_common.yaml").generation is None


def test_parse_failures_are_counted_reported_and_kept(tmp_path, caplog):
    parser = AnswerParser(**Q_INSIGHT["parser"])
    answers = {"0.png": '<think>sharp</think><answer>{"rating": 3.85}</answer>',
               "1.png": "<think>blurry</think> no answer tag",
               "2.png": '<answer>{"score": 2}</answer>'}  # fmt: skip
    seen = []

    def answer(pixels, questions):
        out = [answers[f"{len(seen) + i}.png"] for i in range(len(questions))]
        seen.extend(out)
        return out

    teacher = Teacher(answer, 16, "t", lambda text: parser.parse(text).score)
    caplog.set_level(logging.INFO, logger="iqa_lightning")
    cache = TextCache(tmp_path / "texts.jsonl")
    texts = generate_texts(teacher, images(tmp_path, 3), cache, batch_size=2)
    assert texts == answers  # every text kept, parsed or not
    report = json.loads((tmp_path / "texts.jsonl.parse.json").read_text())
    assert report == {"texts": 3, "parsed": 1, "failed": 2, "failed_ids": ["1.png", "2.png"]}
    assert any("2 of 3 texts have no parsable score" in r.message for r in caplog.records)
    assert parse_report(Teacher(answer, 16, "greedy"), texts) is None  # asked for no score


def test_q_insight_prompt_and_sampling_on_the_tiny_qwen2_5_vl(tmp_path, monkeypatch):
    model = OmegaConf.to_container(OmegaConf.load(CONF / "model/tiny_qwen2_5_vl.yaml"))
    settings = {**Q_INSIGHT, "sampling": {**Q_INSIGHT["sampling"], "max_new_tokens": 3}}
    calls = []
    original = generation.GenerativeScorer.rollout

    def spy(self, batch, n=1, sampling=None):
        out = original(self, batch, n, sampling)
        prompt = self.backbone.tokenizer.decode(out.prompt_ids[0], skip_special_tokens=False)
        calls.append((prompt, (sampling or self.sampling).generate_kwargs(), out.texts))
        return out

    monkeypatch.setattr(generation.GenerativeScorer, "rollout", spy)
    teacher = build_teacher(model, generation=settings)
    texts = generate_texts(teacher, images(tmp_path, 3), TextCache(tmp_path / "t.jsonl"),
                           question="unused", batch_size=2)  # fmt: skip
    assert [len(c[2]) for c in calls] == [2, 1] and len(texts) == 3
    prompt, kwargs, _ = calls[0]
    system, question = Q_INSIGHT["prompt"]["system"], Q_INSIGHT["prompt"]["question"]
    assert f"<|im_start|>system\n{system}<|im_end|>" in prompt
    assert prompt.index(question) < prompt.index("<|vision_start|>")  # question, then image
    assert "unused" not in prompt
    assert kwargs == {"do_sample": True, "max_new_tokens": 3, "temperature": 1.0, "top_k": 50,
                      "top_p": 0.95}  # fmt: skip
    report = json.loads((tmp_path / "t.jsonl.parse.json").read_text())
    assert report["texts"] == 3 and report["parsed"] + report["failed"] == 3
    assert report["failed"] == sum(teacher.parse(t) is None for t in texts.values())


def test_generation_settings_are_checked():
    with pytest.raises(ConfigError, match="teacher.generation takes prompt, sampling and parser"):
        build_teacher(
            OmegaConf.to_container(OmegaConf.load(CONF / "model/tiny_qwen2_5_vl.yaml")),
            generation={"sampling": {}},
        )
    with pytest.raises(ConfigError, match="teacher.generation is for a teacher.model preset"):
        build_teacher(run="somewhere", generation=Q_INSIGHT)


def test_rali_scores_with_clip_frozen_and_trains_it_as_an_option():
    from hydra import compose, initialize_config_dir

    from iqa_lightning.train import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        phases = {
            stage: compose("train", overrides=[f"stage={stage}"]).stage.phases
            for stage in ("rali", "rali_frozen_scores", "rali_mse", "rali_train_encoder")
        }
    assert list(phases["rali"].score.trainable) == ["basis", "basis_scores"]
    assert list(phases["rali"].align.trainable) == ["encoder"]
    assert list(phases["rali_frozen_scores"].score.trainable) == ["basis"]
    assert list(phases["rali_mse"].score.trainable) == ["basis", "basis_scores"]
    assert phases["rali_mse"].align is None
    train = phases["rali_train_encoder"].score
    assert list(train.trainable) == ["encoder", "basis", "basis_scores"]
    assert train.lr.encoder == 1e-5 and list(phases["rali_train_encoder"]) == ["align", "score"]
