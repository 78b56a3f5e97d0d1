"""How far plausible porting mistakes move the mPLUG-Owl2 fixture's logits: each mistake is
applied to the ORIGINAL model (Q-Align's classes, transformers 4.37) loaded from
tests/fixtures/mplug_owl2_tiny, and the largest change of the recorded last-position logits is
printed. It shows which mistakes the golden test (tolerance 1e-4) catches; the table is in the
fixture's README.

    HF_HUB_OFFLINE=1 REF/bin/python tests/benchmarks/mplug_owl2_sensitivity.py \\
        --reference-code Q-Align tests/fixtures/mplug_owl2_tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mplug_owl2_reference as ref  # noqa: E402

PROMPTS = ("q_align", "visual_prompt")


def swap_branches(m):
    for layer in m.model.layers:
        for mw in (layer.input_layernorm, layer.post_attention_layernorm,
                   layer.self_attn.k_proj, layer.self_attn.v_proj):  # fmt: skip
            mw.multiway = type(mw.multiway)([mw.multiway[1], mw.multiway[0]])


def text_norm_for_images(m):
    for layer in m.model.layers:
        layer.input_layernorm.multiway[1] = layer.input_layernorm.multiway[0]


def qkv_as_blocks(m):
    # a port that reads the fused weight as [q; k; v] blocks (CLIP style) computes with the
    # rows of the per-head interleaved [head, (q, k, v), head_dim] layout regrouped
    cfg = m.config.visual_config["visual_model"]
    heads = cfg["num_attention_heads"]
    dim = cfg["hidden_size"] // heads
    for layer in m.model.vision_model.encoder.layers:
        qkv = layer.self_attn.query_key_value
        w = qkv.weight.data.view(3, heads, dim, -1).permute(1, 0, 2, 3).reshape(3 * heads * dim, -1)
        qkv.weight.data.copy_(w)
        qkv.bias.data.copy_(qkv.bias.data.view(3, heads, dim).permute(1, 0, 2).reshape(-1))


def drop_post_layernorm(m):
    import torch.nn as nn

    m.model.vision_model.post_layernorm = nn.Identity()


def zero_vit_eos(m):
    m.model.visual_abstractor.vit_eos.data.zero_()


def zero_k_pos(m):
    for layer in m.model.visual_abstractor.encoder.layers:
        layer.crossattention.attention.k_pos_embed.zero_()


def gelu(m):
    import torch.nn as nn

    for layer in m.model.vision_model.encoder.layers:
        layer.mlp.activation_fn = nn.GELU()


def abstractor_eps_from_config(m):
    for layer in m.model.visual_abstractor.encoder.layers:
        ca = layer.crossattention
        for ln in (ca.norm1, ca.normk, ca.output.norm2):
            ln.eps = 1e-6


def pos_tables_bf16(m):
    for layer in m.model.visual_abstractor.encoder.layers:
        att = layer.crossattention.attention
        att.k_pos_embed.copy_(att.k_pos_embed.bfloat16().float())
        att.q_pos_embed.copy_(att.q_pos_embed.bfloat16().float())


def rms_eps(m):
    for layer in m.model.layers:
        for mw in (layer.input_layernorm, layer.post_attention_layernorm):
            for norm in mw.multiway:
                norm.variance_epsilon = 1e-6
    m.model.norm.variance_epsilon = 1e-6


def vision_eps(m):
    vm = m.model.vision_model
    vm.embeddings.pre_layernorm.eps = 1e-5
    for layer in vm.encoder.layers:
        layer.input_layernorm.eps = layer.post_attention_layernorm.eps = 1e-5


MODEL_MISTAKES = {
    "multiway branches swapped (text <-> image)": swap_branches,
    "text input_layernorm used for image tokens": text_norm_for_images,
    "vision query_key_value split as [q; k; v] blocks": qkv_as_blocks,
    "vision post_layernorm dropped": drop_post_layernorm,
    "vit_eos left out (zero)": zero_vit_eos,
    "abstractor k_pos_embed left out": zero_k_pos,
    "GELU instead of QuickGELU in the ViT": gelu,
    "abstractor norm1/normk/norm2 at eps 1e-6": abstractor_eps_from_config,
    "abstractor sin-cos tables rounded to bf16": pos_tables_bf16,
    "RMSNorm eps 1e-6 instead of 1e-5": rms_eps,
    "ViT LayerNorm eps 1e-5 instead of 1e-6": vision_eps,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-code", required=True, help="a Q-Align checkout")
    parser.add_argument("fixture", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.reference_code).resolve()))
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    golden = load_file(str(args.fixture / "golden.safetensors"))
    pixels = golden["pixel_values"]

    def change(model, px=pixels, modality_zero=False):
        import q_align.model.modeling_mplug_owl2 as original

        prepare = original.MPLUGOwl2MetaForCausalLM.prepare_inputs_labels_for_multimodal

        def text_only(self, *a, **k):
            out = list(prepare(self, *a, **k))
            out[1] = torch.zeros_like(out[1])  # every token marked as text
            return tuple(out)

        if modality_zero:
            original.MPLUGOwl2MetaForCausalLM.prepare_inputs_labels_for_multimodal = text_only
        try:
            worst = 0.0
            for key in PROMPTS:
                ids = golden[f"{key}.input_ids"][None].repeat(len(px), 1)
                with torch.inference_mode():
                    logits = model(ids, images=px)["logits"][:, -1].float()
                worst = max(worst, (logits - golden[f"{key}.logits"]).abs().max().item())
            return worst
        finally:
            original.MPLUGOwl2MetaForCausalLM.prepare_inputs_labels_for_multimodal = prepare

    def row(name, value):
        print(f"{name:55s} {value:.2e}{'' if value > 1e-4 else '  (not caught)'}")

    print(f"{'none: the fixture reloaded (must be 0)':55s} "
          f"{change(ref.load_original(args.fixture)):.2e}")  # fmt: skip
    row("image tokens routed to the text branch",
        change(ref.load_original(args.fixture), modality_zero=True))  # fmt: skip
    for name, mistake in MODEL_MISTAKES.items():
        model = ref.load_original(args.fixture)
        with torch.no_grad():
            mistake(model)
        row(name, change(model))
    mean = torch.tensor(ref.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(ref.CLIP_STD).view(1, 3, 1, 1)
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    px = (pixels * std + mean - torch.tensor(imagenet[0]).view(1, 3, 1, 1)) / torch.tensor(
        imagenet[1]
    ).view(1, 3, 1, 1)
    row("ImageNet mean/std instead of CLIP", change(ref.load_original(args.fixture), px))
    name = "chelsea"
    square = golden[f"square.{name}"].permute(2, 0, 1)[None].float() / 255
    size = pixels.shape[-1]
    resized = (
        F.interpolate(square, size=(size, size), mode="bicubic", antialias=True) - mean
    ) / std
    px = pixels.clone()
    px[2] = resized[0]
    print(f"torch bicubic + antialias vs PIL bicubic ({name}): pixels differ by "
          f"{(resized[0] - pixels[2]).abs().max().item():.2e}")  # fmt: skip
    row(
        f"{name} resized with torch bicubic + antialias",
        change(ref.load_original(args.fixture), px),
    )


if __name__ == "__main__":
    main()
