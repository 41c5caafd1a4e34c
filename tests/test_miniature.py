import json

import pytest
import torch

from jointdiff.jedi.pipeline import JointDiffusionPipeline
from jointdiff.miniature.assemble import assemble
from jointdiff.miniature.config import UNET_CONFIG, VAE_CONFIG, VaeTraining
from jointdiff.miniature.tokenizer import toy_tokenizer
from jointdiff.training.vae import train_vae


def test_toy_tokenizer_keeps_every_caption_word_whole():
    from jointdiff.data.toyworld.generator import make_set

    tok = toy_tokenizer()
    for i in range(20):
        for view in make_set(i, resolution=32).views:
            tokens = tok.convert_ids_to_tokens(tok(view.caption).input_ids)
            assert "<|unk|>" not in tokens, view.caption
            assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
            assert len(tokens) <= tok.model_max_length
    ids = tok("a photo of sks robot", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == tok.model_max_length and ids[-1] == tok.eos_token_id


def test_miniature_shapes_match_the_plan():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL(**VAE_CONFIG)
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 8, 16, 16)  # 64 px -> 16x16x8
    unet = UNet2DConditionModel(**UNET_CONFIG)
    n = sum(p.numel() for p in unet.parameters())
    assert 5e6 < n < 2e7  # ~9M parameters: ~19 MB in fp16, within the 40 MB budget with VAE + text encoder


def test_vae_training_resumes_and_assembles_a_loadable_pipeline(tmp_path):
    cfg = VaeTraining(
        out=str(tmp_path / "vae"), steps=2, full_res_steps=1, batch_size=2, images=4, heldout=4, checkpoint_every=1
    )
    report = train_vae(cfg)
    assert report["steps"] == 2 and report["scaling_factor"] > 0
    cfg.steps = 3
    assert train_vae(cfg)["steps"] == 3  # resumed from the last checkpoint, one more step
    assert json.loads((tmp_path / "vae" / "vae_report.json").read_text())["steps"] == 3
    out = assemble(tmp_path / "vae" / "vae", tmp_path / "base")
    pipe = JointDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a photo of a robot on the beach"], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3)


def test_grown_miniature_predicts_what_it_grew_from(tmp_path):
    """Issue 27: coupled attention added at 16x16 with zeroed outputs leaves every prediction unchanged."""
    from jointdiff.common.paths import shipped_model
    from jointdiff.miniature.assemble import coupled_levels, grow_attention

    src = shipped_model()
    if src is None:
        pytest.skip("no shipped miniature in this install")
    grow_attention(src, tmp_path / "grown")
    old = JointDiffusionPipeline.from_pretrained(src).unet
    new = JointDiffusionPipeline.from_pretrained(tmp_path / "grown").unet
    assert coupled_levels(dict(old.config)) == [8, 4] and coupled_levels(dict(new.config)) == [16, 8, 4]
    assert new.config["_jointdiff"] == old.config["_jointdiff"]
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(4, 17, 16, 16, generator=g), torch.randn(4, 24, 128, generator=g)
    t = torch.tensor([999, 999, 500, 500])
    with torch.no_grad():
        a = old(x, t, text, cross_attention_kwargs={"set_size": 2}).sample
        b = new(x, t, text, cross_attention_kwargs={"set_size": 2}).sample
    assert torch.equal(a, b)
    added = [
        n for n, _ in new.named_parameters() if n.startswith(("down_blocks.0.attentions", "up_blocks.2.attentions"))
    ]
    assert added and all("proj_out" not in n or not new.get_parameter(n).any() for n in added)
    with pytest.raises(ValueError, match="already has attention"):
        grow_attention(tmp_path / "grown", tmp_path / "again")
