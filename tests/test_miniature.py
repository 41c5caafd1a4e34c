import json

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
