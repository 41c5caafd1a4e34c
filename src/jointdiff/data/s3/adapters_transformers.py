"""Transformers adapters: GroundingDINO detector, SAM segmenter, CLIP image embedder, BLIP-2 captioner.

These are the models of JeDi sec. 3.1 and the supplementary ([19], [15], [24], [17]); each loads
from a Hub id or a local directory and implements one interface of :mod:`jointdiff.data.s3.stages`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from jointdiff.data.s3.adapters_diffusers import check_source, load_error
from jointdiff.data.s3.config import CaptionerConfig, ClipConfig, DetectorConfig, ModelStage, SegmenterConfig
from jointdiff.data.s3.stages import Image


def load_model(stage: str, model_cls: Any, spec: ModelStage, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, processor) from ``spec.source``; any failure is a one-line ValueError naming the stage."""
    from transformers import AutoProcessor

    check_source(stage, spec.source)
    try:
        processor = AutoProcessor.from_pretrained(spec.source, revision=spec.revision)
        model = model_cls.from_pretrained(spec.source, revision=spec.revision, dtype=dtype)
    except Exception as e:
        raise load_error(stage, spec.source, e) from e
    return model.to(device).eval(), processor


class GroundingDinoDetector:
    """Open-vocabulary boxes of the object name, GroundingDINO [19] (supplementary, Algorithm 1 line 12)."""

    def __init__(self, spec: DetectorConfig, device: str, dtype: torch.dtype) -> None:
        from transformers import AutoModelForZeroShotObjectDetection

        self.spec, self.device, self.dtype = spec, device, dtype
        self.model, self.processor = load_model("detector", AutoModelForZeroShotObjectDetection, spec, device, dtype)

    @torch.no_grad()
    def __call__(self, image: Image, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (K, 4) x0, y0, x1, y1 in pixels and scores (K,) above the box and text thresholds."""
        text = label.lower().strip().rstrip(".") + "."  # GroundingDINO expects lower-case, '.'-terminated
        inputs = self.processor(images=image.convert("RGB"), text=text, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.spec.box_threshold,
            text_threshold=self.spec.text_threshold,
            target_sizes=[image.size[::-1]],
        )[0]
        return result["boxes"].float().cpu().numpy().reshape(-1, 4), result["scores"].float().cpu().numpy()


class SamSegmenter:
    """Box-prompted foreground masks, SAM [15] (supplementary, Algorithm 1 line 12)."""

    def __init__(self, spec: SegmenterConfig, device: str, dtype: torch.dtype) -> None:
        from transformers import SamModel

        self.spec, self.device, self.dtype = spec, device, dtype
        self.model, self.processor = load_model("segmenter", SamModel, spec, device, dtype)

    @torch.no_grad()
    def __call__(self, image: Image, boxes: np.ndarray) -> np.ndarray:
        """Masks (K, H, W) bool: per box, the candidate mask with the highest predicted IoU."""
        w, h = image.size
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool)
        inputs = self.processor(
            images=image.convert("RGB"), input_boxes=[np.asarray(boxes, dtype=float).tolist()], return_tensors="pt"
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.model(**inputs, multimask_output=True)
        masks = self.processor.post_process_masks(
            out.pred_masks.float().cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]  # (K, M, H, W) bool
        best = out.iou_scores[0].float().argmax(-1).cpu()  # (K, M) -> (K,)
        return masks[torch.arange(len(best)), best].numpy().astype(bool)  # (K, H, W)


class ClipEmbedder:
    """CLIP [24] image features for the instance affinity matrix (Algorithm 1, line 13)."""

    def __init__(self, spec: ClipConfig, device: str, dtype: torch.dtype) -> None:
        from transformers import CLIPModel

        self.spec, self.device, self.dtype = spec, device, dtype
        self.model, self.processor = load_model("clip", CLIPModel, spec, device, dtype)

    @torch.no_grad()
    def __call__(self, images: list[Image]) -> np.ndarray:
        """Unit-norm image features (K, D)."""
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        feats = self.model.get_image_features(pixel_values=pixels)
        if not isinstance(feats, torch.Tensor):  # some versions return a model output
            feats = feats.pooler_output
        feats = feats.float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


class Blip2Captioner:
    """BLIP-2 [17] captions paired with the images for training (supplementary)."""

    def __init__(self, spec: CaptionerConfig, device: str, dtype: torch.dtype) -> None:
        from transformers import Blip2ForConditionalGeneration

        self.spec, self.device, self.dtype = spec, device, dtype
        self.model, self.processor = load_model("captioner", Blip2ForConditionalGeneration, spec, device, dtype)

    @torch.no_grad()
    def __call__(self, images: list[Image]) -> list[str]:
        """Greedy captions, one per image (empty strings are possible and handled by the caller)."""
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.spec.max_new_tokens, do_sample=False)
        return [c.strip() for c in self.processor.batch_decode(out, skip_special_tokens=True)]
