"""Attention analysis (analysis=attention): the backbone's eager read-out at the answer
position against attention recomputed by hand, the part masses against the weights they sum,
prompts with and without a description, and the files."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from iqa_lightning.analysis import analysis_trainer, attention, run_analysis
from iqa_lightning.analysis.segments import score_prompt_segments
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
from iqa_lightning.models.backbones.attention import AttentionReadout
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer
from iqa_lightning.perception import DescriptionScorer, SyntheticDescriptions
from tests.test_analyze import WEIGHTS, WORDS, Images, loader, module  # noqa: F401

IDS = ["I01_01_05.png", "I02_03_01.png", "I03.png"]


@pytest.fixture(scope="module")
def llava():
    return build_tiny_llava(num_layers=3)


def pixels_of(backbone, n=2, seed=0):
    size = backbone.image_size
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def test_readout_equals_attention_recomputed_by_hand_for_one_layer(llava):
    ids = llava.encode_prompt("How good is this image?", "The quality is")
    pixels = pixels_of(llava)
    layer = 1
    caught = {}

    def grab(layer_module, args, kwargs):
        caught.update(h=kwargs["hidden_states"], pe=kwargs["position_embeddings"])

    attn = llava.attention_modules()[layer]
    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        llava.next_token_logits(pixels, ids)  # the model's own (sdpa) run gives the inputs
    handle.remove()
    h, (cos, sin) = caught["h"], caught["pe"]
    b, n, _ = h.shape
    d = attn.head_dim
    with torch.no_grad():
        q = attn.q_proj(h).view(b, n, -1, d).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, -1, d).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped K/V heads
    by_hand = torch.softmax((q[:, :, -1:] @ k.transpose(-1, -2)).squeeze(2) / d**0.5, dim=-1)
    read = llava.last_token_attention(pixels, ids)
    assert read.shape == (3, 2, 4, ids.shape[1])
    torch.testing.assert_close(read[layer], by_hand, atol=1e-6, rtol=1e-5)
    assert llava.model.config.text_config._attn_implementation == "sdpa", "switched back"


def test_qwen_readout_is_transformers_own_eager_attention_row():
    backbone = build_tiny_qwen2_vl()
    ids = backbone.encode_prompt("How good is this image?", "The quality is")
    pixels = pixels_of(backbone)
    read = backbone.last_token_attention(pixels, ids)
    with backbone.eager_attention(), torch.no_grad():
        out = backbone._forward(pixels, ids, output_attentions=True)
    full = torch.stack([a[:, :, -1] for a in out.attentions]).float()
    torch.testing.assert_close(read, full)
    torch.testing.assert_close(read.sum(-1), torch.ones(read.shape[:-1]))


def test_sequence_positions_expand_a_spliced_placeholder():
    spliced = SimpleNamespace(family="spliced", num_image_tokens=4, num_placeholders=1,
                              image_token_id=-200)  # fmt: skip
    ids = torch.tensor([[5, 6, -200, 7, 8]])
    out = AttentionReadout.sequence_positions(spliced, ids)
    assert out.tolist() == [[0, 1, 2, 6, 7, 8]]
    expanded = SimpleNamespace(family="x", num_image_tokens=2, num_placeholders=2,
                               image_token_id=9)  # fmt: skip
    assert AttentionReadout.sequence_positions(expanded, torch.tensor([[1, 9, 9, 3]])).tolist() == [
        [0, 1, 2, 3, 4]
    ]


def qalign(question="How would you rate the quality of this image?"):
    return WordScore(WORDS, WEIGHTS, question=question, answer_prefix="The quality of the image is")


def test_part_masses_are_the_weights_summed_over_their_positions(llava):
    scorer = LMMWordScorer(llava, NoPrompt(), qalign())
    pixels = pixels_of(llava, 3)
    out = attention.compute(scorer, pixels, {})
    ids = scorer.input_ids[0]
    weights = llava.last_token_attention(pixels, scorer.input_ids).double().mean(2)
    image = ids == llava.image_token_id
    text = llava.build_prompt(scorer.word_head.question, scorer.word_head.answer_prefix)
    segments = score_prompt_segments(llava, scorer.word_head.question, scorer.word_head.answer_prefix)
    q0, q1 = segments.spans["question"]
    pieces = llava.tokenizer.decode(ids[q0:q1]).strip()
    assert pieces == scorer.word_head.question and scorer.word_head.question in text
    question = torch.zeros_like(image)
    question[q0:q1] = True
    mass = out["mass"]  # [B, layers, parts]
    assert mass.shape == (3, 3, 3)
    torch.testing.assert_close(mass[..., 0], weights[..., image].sum(-1).T)
    torch.testing.assert_close(mass[..., 1], weights[..., question].sum(-1).T)
    torch.testing.assert_close(mass[..., :2].sum(-1), weights[..., image | question].sum(-1).T)
    assert torch.all(mass[..., 2] == 0), "the score prompt has no description"
    assert out["positions"][0].tolist() == [int(image.sum()), q1 - q0, 0]
    other = 1 - mass.sum(-1)
    assert torch.all(other > 0) and torch.all(other < 1)
    longer = LMMWordScorer(llava, NoPrompt(), qalign("Rate the technical quality of this photo "
                                                     "taken outdoors at dusk, please."))  # fmt: skip
    changed = attention.compute(longer, pixels, {})
    assert changed["positions"][0, 1] > out["positions"][0, 1]
    assert (changed["mass"][..., 1] - mass[..., 1]).abs().max() > 1e-3, "the prompt matters"


def described(backbone, image):
    return DescriptionScorer(backbone, NoPrompt(), qalign(), SyntheticDescriptions(5),
                             image=image, description="given", max_new_tokens=6)  # fmt: skip


@pytest.mark.parametrize("image", ["visible", "none"])
def test_a_described_run_attends_to_its_description(llava, image):
    scorer = described(llava, image)
    pixels = pixels_of(llava, 3)
    batch = {"pixels": pixels, "image_id": IDS}
    out = attention.compute(scorer, pixels, {}, batch)
    mass, positions = out["mass"], out["positions"]
    assert torch.all(positions[:, 2] > 0) and torch.all(mass[..., 2] > 0)
    if image == "none":
        assert torch.all(positions[:, 0] == 0) and torch.all(mass[..., 0] == 0)
    else:
        assert torch.all(positions[:, 0] == llava.num_image_tokens)
    # the descriptions differ in length: the batched (left-padded) masses are the one-by-one ones
    alone = [attention.compute(scorer, pixels[i : i + 1], {}, {"pixels": pixels[i : i + 1],
             "image_id": IDS[i : i + 1]}) for i in range(3)]  # fmt: skip
    assert len({int(p) for p in positions[:, 2]}) > 1
    torch.testing.assert_close(mass, torch.cat([a["mass"] for a in alone]), atol=1e-5, rtol=1e-4)
    other = described(llava, image)
    other.lead = "Notes: "
    moved = attention.compute(other, pixels, {}, batch)
    assert (moved["mass"] - mass).abs().max() > 1e-4


def test_files_hold_the_per_layer_means(module, tmp_path):  # noqa: F811
    images = Images(5, module.backbone.image_size)
    result, files = run_analysis("attention", analysis_trainer(accelerator="cpu"), module,
                                 loader(images, 2), {}, tmp_path)  # fmt: skip
    assert [f.name for f in files] == list(attention.FILES) and all(f.stat().st_size for f in files)
    summary = json.loads((tmp_path / "attention.json").read_text())
    assert summary["parts"] == ["image", "question", "other"] and summary["n_images"] == 5
    with open(tmp_path / "attention.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    layers = summary["layers"]
    assert len(rows) == 3 * layers
    for layer in range(1, layers + 1):
        masses = [float(r["mean_mass"]) for r in rows if r["layer"] == str(layer)]
        assert sum(masses) == pytest.approx(1.0, abs=1e-6)
    image_rows = [float(r["mean_mass"]) for r in rows if r["part"] == "image"]
    expected = result.mass[:, :, 0].mean(0)
    torch.testing.assert_close(torch.tensor(image_rows, dtype=torch.float64), expected)
    assert summary["image_mass"] == pytest.approx(float(expected.mean()), abs=1e-9)
    assert summary["mass"]["image"] == pytest.approx(image_rows, abs=1e-7)


@pytest.mark.parametrize("image", ["visible", "none"])
def test_logit_lens_of_a_described_run_ends_at_its_own_inference_logits(llava, image):
    from iqa_lightning.analysis import logit_lens

    scorer = described(llava, image)
    pixels = pixels_of(llava, 3)
    batch = {"pixels": pixels, "image_id": IDS}
    lens = logit_lens.layer_logits(scorer, pixels, batch, {})
    with torch.no_grad():
        own = scorer.inference_logits(pixels, scorer.ground_truth(IDS))
    torch.testing.assert_close(lens[-1], own, atol=1e-4, rtol=1e-4)
    plain = LMMWordScorer(llava, NoPrompt(), qalign())
    bare = logit_lens.layer_logits(plain, pixels)
    assert (bare[-1] - own).abs().max() > 1e-3, "the described prompt is not the image prompt"
