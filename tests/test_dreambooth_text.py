"""DreamBooth's trained text condition (issue 28): the text encoder with the U-Net, the identifier's
embedding alone, LoRA targets; artefacts, loading and exact resume for each."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from jointdiff.cli import main
from jointdiff.common.tiny import save_tiny_base
from jointdiff.testing import save_tiny_run
from jointdiff.training.dreambooth import (
    DreamBoothConfig,
    finetune,
    identifier_ids,
    load_checkpoint,
    run_config,
)

INSTANCE = "a photo of sks toy"
PLAIN = "a photo of a toy"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbt")
    save_tiny_run(root)  # the base model, its input images and a default (LoRA) run
    return root


def _run(root, name: str, **fields) -> DreamBoothConfig:
    cfg = copy.deepcopy(run_config(root / "run"))
    cfg.out = str(root / name)
    for k, v in fields.items():
        setattr(cfg, k, v)
    cfg.__post_init__()
    finetune(copy.deepcopy(cfg))
    return cfg


@pytest.fixture(scope="module")
def full_text(root):
    return _run(root, "full_text", lora_rank=0, learning_rate=1e-3, train_text_encoder=True)


@pytest.fixture(scope="module")
def ident(root):
    return _run(root, "ident", lora_rank=0, learning_rate=1e-3, train_identifier=True, identifier_lr=0.1)


def _texts(model, prompts):
    with torch.no_grad():
        return model.encode_text(prompts)


def test_text_encoder_trained_with_the_unet_is_saved_as_a_delta_and_loaded(root, full_text):
    folder = root / "full_text" / "checkpoints" / "step-000006"
    assert sorted(p.name for p in folder.iterdir()) == ["delta.safetensors", "text_encoder_delta.safetensors"]
    delta = load_file(folder / "text_encoder_delta.safetensors")
    assert all(v.dtype == torch.float16 for v in delta.values())
    base, tuned = load_checkpoint(root / "full_text", 0), load_checkpoint(root / "full_text", 6)
    for name, p in tuned.text_encoder.state_dict().items():  # base + delta, to fp16 rounding of the delta
        torch.testing.assert_close(p, base.text_encoder.state_dict()[name] + delta[name].float(), atol=0, rtol=0)
    assert max(v.abs().max() for v in delta.values()) > 1e-4  # the encoder moved
    moved = (_texts(tuned, [INSTANCE, PLAIN]) - _texts(base, [INSTANCE, PLAIN])).abs().amax(dim=(1, 2))
    assert (moved > 1e-4).all()  # every prompt's condition moves: the whole encoder is trained


def test_learned_identifier_moves_its_embedding_row_and_nothing_else(root, ident):
    folder = root / "ident" / "checkpoints" / "step-000006"
    assert sorted(p.name for p in folder.iterdir()) == ["delta.safetensors", "identifier.safetensors"]
    base, tuned = load_checkpoint(root / "ident", 0), load_checkpoint(root / "ident", 6)
    ids = identifier_ids(base, ident)
    w0 = base.text_encoder.get_input_embeddings().weight
    w1 = tuned.text_encoder.get_input_embeddings().weight
    changed = (w1 - w0).abs().amax(dim=1) > 0
    assert changed.nonzero().flatten().tolist() == sorted(
        set(ids)
    )  # only the identifier's rows (no weight decay elsewhere)
    assert torch.equal(_texts(tuned, [PLAIN]), _texts(base, [PLAIN]))  # a prompt without it: unchanged
    assert not torch.equal(_texts(tuned, [INSTANCE]), _texts(base, [INSTANCE]))
    for name, p in tuned.text_encoder.state_dict().items():  # the rest of the encoder stays the base's
        if "token_embedding" not in name:
            assert torch.equal(p, base.text_encoder.state_dict()[name]), name


def test_lora_on_the_text_encoder_and_chosen_unet_targets(root):
    from peft.tuners.tuners_utils import BaseTunerLayer

    _run(root, "lora_text", train_text_encoder=True, lora_targets=("to_q",), learning_rate=1e-2)
    folder = root / "lora_text" / "checkpoints" / "step-000006"
    assert sorted(p.name for p in folder.iterdir()) == ["lora.safetensors", "text_encoder_lora.safetensors"]
    unet_keys = load_file(folder / "lora.safetensors").keys()
    assert unet_keys and all(".to_q." in k for k in unet_keys)  # only the chosen U-Net targets are adapted
    tuned, base = load_checkpoint(root / "lora_text", 6), load_checkpoint(root / "lora_text", 0)
    layers = [m for m in tuned.text_encoder.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(m.merged for m in layers)
    assert not torch.allclose(_texts(tuned, [PLAIN]), _texts(base, [PLAIN]), atol=1e-6)


@pytest.mark.parametrize(
    "fields",
    [
        {"lora_rank": 0, "learning_rate": 1e-3, "train_text_encoder": True},
        {"lora_rank": 0, "learning_rate": 1e-3, "train_identifier": True},
    ],
    ids=["text-encoder", "identifier"],
)
def test_interrupted_run_with_a_trained_text_condition_resumes_exactly(root, tmp_path, monkeypatch, fields):
    import jointdiff.training.shell as shell

    whole = _run(root, "whole-" + ("identifier" if fields.get("train_identifier") else "text"), **fields)
    save, calls = shell.save_checkpoint, {"n": 0}

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt

    cut = copy.deepcopy(whole)
    cut.out = str(tmp_path / "cut")
    monkeypatch.setattr(shell, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(copy.deepcopy(cut))
    monkeypatch.setattr(shell, "save_checkpoint", save)
    finetune(copy.deepcopy(cut))
    assert calls["n"] == 1
    a_dir, b_dir = (f"{d}/checkpoints/step-000006" for d in (whole.out, cut.out))
    for name in ("delta.safetensors", "text_encoder_delta.safetensors", "identifier.safetensors"):
        try:
            a = load_file(f"{a_dir}/{name}")
        except FileNotFoundError:
            continue
        b = load_file(f"{b_dir}/{name}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_run_written_before_the_new_fields_still_resumes(root, tmp_path):
    cfg = copy.deepcopy(run_config(root / "run"))
    cfg.out = str(tmp_path / "old")
    finetune(copy.deepcopy(cfg))
    run_file = tmp_path / "old" / "run.json"
    data = json.loads(run_file.read_text())
    for key in ("lora_targets", "train_text_encoder", "text_encoder_lr", "train_identifier", "identifier_lr"):
        del data["config"][key]
    run_file.write_text(json.dumps(data))
    finetune(copy.deepcopy(cfg))  # the same run: accepted, nothing retrained
    other = copy.deepcopy(cfg)
    other.train_identifier = True
    with pytest.raises(ValueError, match="different config"):
        finetune(other)


def test_config_and_cli_errors(root, tmp_path, capsys):
    with pytest.raises(ValueError, match="choose one"):
        DreamBoothConfig(
            base="b", images="i", class_word="toy", out="o", train_text_encoder=True, train_identifier=True
        )
    with pytest.raises(ValueError, match="lora_targets"):
        DreamBoothConfig(base="b", images="i", class_word="toy", out="o", lora_targets=())
    save_tiny_base(tmp_path / "base")
    argv = ["finetune", "--base", str(tmp_path / "base"), "--images", str(root / "imgs"), "--class-word", "toy"]
    assert main([*argv, "--out", str(tmp_path / "r"), "--train-text-encoder", "--train-identifier"]) == 2
    assert "choose one" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        main([*argv, "--out", str(tmp_path / "r"), "--lora-targets", ","])
    assert e.value.code == 2 and "comma-separated module names" in capsys.readouterr().err


def test_class_images_shared_between_runs_are_sampled_once(root, tmp_path, monkeypatch):
    import jointdiff.training.dreambooth as db

    shared = tmp_path / "class-toy"
    first = _run(root, "shared-a", class_data_dir=str(shared), steps=2, checkpoints=(2,))
    assert sorted(p.name for p in shared.iterdir()) == ["00000.png", "00001.png"]
    assert not (root / "shared-a" / "class_images").exists()

    def no_sampling(*args, **kwargs):
        raise AssertionError("class images sampled again")

    monkeypatch.setattr(db, "sample", no_sampling)
    second = copy.deepcopy(first)
    second.out, second.seed = str(tmp_path / "shared-b"), first.seed
    finetune(second)  # the cached class images serve the second run
    assert (tmp_path / "shared-b" / "checkpoints" / "step-000002").is_dir()
