"""Frechet distance between generated images and real renders, in toy features (issue 27's image quality).

FID (Heusel et al. 2017) compares the Gaussians fitted to Inception pool features of two image sets.
No Inception weights can be downloaded here, so the features are the toy CLIP's image trunk, pooled
as its tower pools them (average and maximum of the last feature map, before the projection): the
toy world's analogue of Inception's pool3, trained on the same renders and captions as the toy CLIP
(``jointdiff toyworld train-evaluators``). The distance itself is torchmetrics'
``FrechetInceptionDistance`` with that module as a custom feature extractor; nothing of it is
written here. Numbers are comparable only with the same features, image count and resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import PIL.Image
import torch
import torch.nn.functional as F

from jointdiff.evaluation.toy.evaluators import load_toy_dual, to_tensor

BATCH = 256


class ToyPoolFeatures(torch.nn.Module):
    """Images in [0, 1] ``(B, 3, H, W)`` -> pooled last-stage features ``(B, 2C)`` of the toy CLIP's image trunk."""

    def __init__(self, tower: torch.nn.Module, resolution: int, width: int) -> None:
        super().__init__()
        self.tower, self.resolution = tower, resolution
        self.num_features = 2 * width  # torchmetrics reads the feature size here

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        f = self.tower.trunk(x)[-1]  # (B, C, h, w)
        return torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1).double()


def toy_features(weights: str | None = None) -> ToyPoolFeatures:
    """The feature module of the shipped toy CLIP (or of the dual weights at ``weights``)."""
    dual = load_toy_dual(weights)
    return ToyPoolFeatures(dual.net.image, dual.resolution, int(dual.net.cfg.widths[-1]))


def _batches(images: Sequence[PIL.Image.Image], resolution: int) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), BATCH):
        yield to_tensor(images[i : i + BATCH], resolution)


def frechet_distance(
    real: Sequence[PIL.Image.Image], generated: Sequence[PIL.Image.Image], features: ToyPoolFeatures | None = None
) -> float:
    """Frechet distance between the toy-feature Gaussians of ``real`` and ``generated`` (torchmetrics FID)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"a Frechet distance needs at least 2 images a side, got {len(real)} and {len(generated)}")
    features = features or toy_features()
    fid = FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=False)
    for x in _batches(real, features.resolution):
        fid.update(x, real=True)
    for x in _batches(generated, features.resolution):
        fid.update(x, real=False)
    return float(fid.compute())
