"""Feature extractors (tiny random CLIP / ViT from transformers configs), preprocessing parity with
transformers' image processor, segmenter adapters, and the missing-backbone message."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from jointdiff.evaluation.benchmarks import load_dreambooth
from jointdiff.evaluation.features import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DualEncoder,
    ImageEncoder,
    load_clip,
    load_dino,
    preprocess,
)
from jointdiff.evaluation.metrics import cosine_matrix, image_alignment
from jointdiff.evaluation.segmenters import (
    ClipSegSegmenter,
    MaskFileSegmenter,
    SemanticSegmenter,
    cutout,
    for_subject,
    load_clipseg,
)
from jointdiff.testing.evaluation import save_tiny_clip, save_tiny_clipseg, save_tiny_vit

DREAMBOOTH = Path(os.environ.get("JOINTDIFF_DREAMBOOTH", Path(__file__).resolve().parents[2] / "shared" / "dreambooth"))
needs_dreambooth = pytest.mark.skipif(not DREAMBOOTH.is_dir(), reason=f"DreamBooth dataset not at {DREAMBOOTH}")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread on a shared CPU


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return save_tiny_clip(root / "clip"), save_tiny_vit(root / "dino"), save_tiny_clipseg(root / "clipseg")


@pytest.fixture(scope="module")
def dog_images():
    """Real images of one subject (or synthetic stand-ins where the dataset is absent)."""
    if DREAMBOOTH.is_dir():
        return load_dreambooth(str(DREAMBOOTH)).subjects()[10].images  # dog
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]


def _synthetic(w: int, h: int, seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("resize", "crop", "mean", "std"), [(224, 224, CLIP_MEAN, CLIP_STD), (256, 224, IMAGENET_MEAN, IMAGENET_STD)]
)
def test_preprocess_matches_transformers_image_processor(dog_images, resize, crop, mean, std):
    """Parity with transformers' PIL CLIP image processor (shortest edge, bicubic, centre crop, normalise)."""
    from transformers import CLIPImageProcessorPil

    images = [*dog_images[:2], _synthetic(300, 200, 1), _synthetic(97, 131, 2)]
    ref = CLIPImageProcessorPil(
        size={"shortest_edge": resize},
        crop_size={"height": crop, "width": crop},
        resample=PIL.Image.Resampling.BICUBIC,
        image_mean=mean,
        image_std=std,
    )(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(preprocess(images, resize, crop, mean, std), ref, atol=1e-6, rtol=0)


@needs_dreambooth
def test_tiny_clip_and_dino_on_real_images(tiny_dirs, dog_images):
    """Encoders equal the transformers model run by hand, are unit-norm, and feed the metrics."""
    clip, dino = load_clip(str(tiny_dirs[0])), load_dino(str(tiny_dirs[1]))
    assert isinstance(clip, DualEncoder) and isinstance(dino, ImageEncoder)
    f_clip, f_dino = clip.encode_images(dog_images), dino.encode_images(dog_images)
    assert f_clip.shape == (len(dog_images), 16) and f_dino.shape == (len(dog_images), 24)
    torch.testing.assert_close(f_clip.norm(dim=-1), torch.ones(len(dog_images)))
    with torch.no_grad():  # by hand: CLIP projection of the pooled output; DINO CLS of the last layer
        x = preprocess(dog_images, 32, 32, CLIP_MEAN, CLIP_STD)
        ref = clip.model.get_image_features(pixel_values=x).pooler_output
        torch.testing.assert_close(f_clip, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=0)
        x = preprocess(dog_images, 37, 32, IMAGENET_MEAN, IMAGENET_STD)  # 37 = round(32 * 256 / 224)
        ref = dino.model(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(f_dino, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=0)
    # batching does not change features; the metric of the real set equals its hand-made formula
    dino.batch_size = 2
    torch.testing.assert_close(dino.encode_images(dog_images), f_dino, atol=1e-5, rtol=0)
    sim = f_dino.double() @ f_dino.double().T
    torch.testing.assert_close(image_alignment(f_dino[:1], f_dino), sim[0].mean().reshape(1))
    # a full-image mask leaves a square image unchanged: masked features equal plain ones
    full = [cutout(im.convert("RGB"), np.ones((im.height, im.width), bool)) for im in dog_images[:2]]
    torch.testing.assert_close(dino.encode_images(full), f_dino[:2], atol=1e-5, rtol=0)
    # texts: unit norm, deterministic, different prompts differ
    t = clip.encode_texts(["a dog in the jungle", "a dog in the snow", "a dog in the jungle"])
    torch.testing.assert_close(t[0], t[2])
    assert cosine_matrix(t[:1], t[1:2]).item() < 1 - 1e-4


def test_missing_backbone_names_model_and_offline_option(tmp_path):
    missing = tmp_path / "no-clip-here"
    with pytest.raises(OSError) as err:
        load_clip(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "--clip-model DIR" in msg and "openai/clip-vit-base-patch32" in msg
    assert "\n" not in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match=r"cannot load DINO backbone .*empty.*--dino-model DIR"):
        load_dino(str(empty))
    with pytest.raises(OSError, match=r"CLIPSeg .*--segmenter-model DIR"):
        load_clipseg(str(missing))


def test_hub_id_not_cached_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"'facebook/dino-vits16-not-a-model' \(not in the HF cache"):
        load_dino("facebook/dino-vits16-not-a-model")


def test_clipseg_segmenter_prompts_with_class_word_and_thresholds(tiny_dirs):
    seg = load_clipseg(str(tiny_dirs[2]))
    image = _synthetic(40, 30, 3)

    class Dog:
        class_word = "dog"

    dog = for_subject(seg, Dog())
    assert isinstance(dog, ClipSegSegmenter) and dog.prompt == "dog" and dog.model is seg.model
    mask = dog(image)
    assert mask.shape == (30, 40) and mask.dtype == np.bool_
    dog.threshold = 0.0
    assert dog(image).all()  # sigmoid > 0 everywhere
    dog.threshold = 1.0
    assert not dog(image).any()


def test_semantic_segmenter_foreground_is_not_background():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=3, id2label={0: "background", 1: "dog", 2: "cat"},
    )  # fmt: skip
    model = SegformerForSemanticSegmentation(config).eval()
    processor = SegformerImageProcessorPil(size={"height": 32, "width": 32})
    seg = SemanticSegmenter(model, processor)
    image = _synthetic(24, 20, 4)
    with torch.no_grad():
        x = processor(images=image, return_tensors="pt")["pixel_values"]
        logits = torch.nn.functional.interpolate(model(pixel_values=x).logits, size=(20, 24), mode="bilinear")
    np.testing.assert_array_equal(seg(image), (logits[0].argmax(0) != 0).numpy())
    with pytest.raises(ValueError, match="no label in"):
        SemanticSegmenter(model, processor, background_labels=("sky",))


def test_mask_files_round_trip(tmp_path):
    images, masks = tmp_path / "images" / "dog", tmp_path / "masks" / "dog"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    _synthetic(12, 10, 5).save(images / "00.jpg")
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    PIL.Image.fromarray(m.astype(np.uint8) * 255).save(masks / "00.png")
    seg = MaskFileSegmenter(tmp_path / "masks")
    np.testing.assert_array_equal(seg(PIL.Image.open(images / "00.jpg")), m)
    _synthetic(12, 10, 6).save(images / "01.jpg")
    with pytest.raises(FileNotFoundError, match="no mask file"):
        seg(PIL.Image.open(images / "01.jpg"))
