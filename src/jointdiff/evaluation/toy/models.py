"""The toy evaluators' networks: a CLIP-like dual encoder, a DINO-like identity encoder, a foreground segmenter.

All take ``(B, 3, R, R)`` images in [0, 1] at their training resolution ``R`` (64 by default)
and are small (0.3-2 M parameters) so they train on a CPU. Weights are stored as fp16
safetensors whose metadata holds the config (and the dual encoder's vocabulary), so a file is
self-describing: :func:`load_model` rebuilds the network from the file alone.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture of one evaluator network (stored in its weights file)."""

    kind: str  # "dual" | "identity" | "segmenter"
    resolution: int = 64  # input side; images are resized to it
    widths: tuple[int, ...] = (32, 64, 128, 192)  # conv trunk channels, one stage each
    strides: tuple[int, ...] = ()  # stride of each stage (empty: 2 everywhere)
    pool: str = "avgmax"  # "avgmax": global average + max; "attention": foreground-weighted (a learned 1x1 map)
    embed_dim: int = 128  # joint embedding size (encoders)
    text_width: int = 128  # text transformer width (dual)
    text_layers: int = 2
    text_heads: int = 4
    max_words: int = 24  # caption length in words (longer captions are truncated)
    vocab: tuple[str, ...] = field(default_factory=tuple)  # word vocabulary (dual); index 0 = pad, 1 = unknown

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EvaluatorConfig:
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvTrunk(nn.Module):
    """A small VGG-style trunk: a stem conv, then one stage of two convs per further width (stride 2 by default)."""

    def __init__(self, widths: tuple[int, ...], strides: tuple[int, ...] = ()) -> None:
        super().__init__()
        strides = strides or (2,) * len(widths)
        if len(strides) != len(widths):
            raise ValueError(f"{len(widths)} widths but {len(strides)} strides")
        stages = [_conv(3, widths[0], strides[0])]
        for (cin, cout), stride in zip(itertools.pairwise(widths), strides[1:], strict=True):
            stages.append(nn.Sequential(_conv(cin, cout, stride), _conv(cout, cout)))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage (finest first)."""
        x = (x - PIXEL_MEAN) / PIXEL_STD
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ImageTower(nn.Module):
    """Images -> L2-normalised embeddings: trunk, (attention-weighted) average and max pooling, MLP projection.

    With ``pool="attention"`` a 1x1 conv scores every cell of the last feature map; the sigmoid of
    the score weights the pooling, so features of the subject dominate those of the background
    (trained with an auxiliary foreground-mask loss, the toy analogue of DINO's object attention).
    """

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        if cfg.pool not in ("avgmax", "attention"):
            raise ValueError(f"unknown pool {cfg.pool!r}")
        self.trunk = ConvTrunk(cfg.widths, cfg.strides)
        self.attn = nn.Conv2d(cfg.widths[-1], 1, 1) if cfg.pool == "attention" else None
        self.proj = nn.Sequential(
            nn.Linear(2 * cfg.widths[-1], 2 * cfg.embed_dim), nn.ReLU(), nn.Linear(2 * cfg.embed_dim, cfg.embed_dim)
        )

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L2-normalised embeddings (B, D), attention logits (B, h, w) or None)."""
        f = self.trunk(x)[-1]  # (B, C, h, w)
        if self.attn is None:
            pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)  # (B, 2C)
            return F.normalize(self.proj(pooled), dim=-1), None
        logits = self.attn(f)  # (B, 1, h, w)
        w = logits.sigmoid()
        avg = (f * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-3)  # (B, C)
        pooled = torch.cat([avg, (f * w).amax((2, 3))], dim=1)  # (B, 2C)
        return F.normalize(self.proj(pooled), dim=-1), logits[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


class TextTower(nn.Module):
    """Word ids -> L2-normalised embeddings: embeddings + positions, a small transformer, masked mean pooling."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(cfg.vocab) + 2, cfg.text_width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(cfg.max_words, cfg.text_width))
        layer = nn.TransformerEncoderLayer(
            cfg.text_width, cfg.text_heads, 2 * cfg.text_width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0  # (B, T)
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, T, D)
        x = self.norm(self.encoder(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).float()  # (B, T, 1)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)
        return F.normalize(self.proj(pooled), dim=-1)


class DualEncoderNet(nn.Module):
    """A CLIP-like image/text model trained contrastively on toy renders and captions (for CLIP-T, CLIP-I)."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        if not cfg.vocab:
            raise ValueError("a dual encoder config needs a vocabulary")
        self.cfg = cfg
        self.image = ImageTower(cfg)
        self.text = TextTower(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), as CLIP
        self._index = {w: i + 2 for i, w in enumerate(cfg.vocab)}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Captions -> ``(B, T)`` word ids (0 = pad, 1 = unknown word), T <= max_words."""
        from jointdiff.data.toyworld.captions import words

        rows = [[self._index.get(w, 1) for w in words(t)][: self.cfg.max_words] or [1] for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


class IdentityNet(nn.Module):
    """A DINO-role encoder: same subject close across scenes, poses and lighting; different subjects far."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x)


class SegmenterNet(nn.Module):
    """A tiny U-Net: image -> foreground logits at the input resolution (masks for MCLIP-I / MDINO)."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = ConvTrunk(cfg.widths, cfg.strides)
        ws = cfg.widths
        self.up = nn.ModuleList(_conv(ws[i + 1] + ws[i], ws[i]) for i in range(len(ws) - 1))
        self.head = nn.Sequential(_conv(ws[0] + 3, ws[0]), nn.Conv2d(ws[0], 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(x)
        y = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            y = F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, feats[i]], dim=1))  # (B, C_i+1 + C_i, h, w) -> (B, C_i, h, w)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([y, x], dim=1)).squeeze(1)  # (B, H, W) logits


NETS = {"dual": DualEncoderNet, "identity": IdentityNet, "segmenter": SegmenterNet}


def build_model(cfg: EvaluatorConfig) -> nn.Module:
    """The network of a config."""
    if cfg.kind not in NETS:
        raise ValueError(f"unknown evaluator kind {cfg.kind!r}; choose one of: {', '.join(NETS)}")
    return NETS[cfg.kind](cfg)


def save_model(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write fp16 safetensors with the config (and ``extra`` strings) in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"config": model.cfg.to_json(), **(extra or {})})
    path.chmod(0o644)  # a shipped file: readable by everyone
    return path


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild a network from a weights file written by :func:`save_model` (float32, eval mode)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise OSError(f"no evaluator weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no toy-evaluator config in its metadata")
    model = build_model(EvaluatorConfig.from_json(meta["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)


def n_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
