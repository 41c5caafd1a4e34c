"""Shared fixtures: tiny random SD components built from the real diffusers/transformers classes."""

from __future__ import annotations

import copy

import pytest
import torch

from jointdiff.common.tiny import TEXT_DIM, tiny_components
from jointdiff.jedi.model import convert_unet


@pytest.fixture(scope="session")
def _components():
    return tiny_components(seed=0)


@pytest.fixture
def components(_components):
    """A fresh copy of the tiny components (tests may mutate them)."""
    return copy.deepcopy(_components)


@pytest.fixture
def unet(components):
    return components["unet"].eval()


@pytest.fixture
def joint_unet(components):
    """A converted tiny U-Net (plain module; JointUNet.with_joint_attention installs the coupling)."""
    return convert_unet(components["unet"]).eval()


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def text(b: int, n: int, seed: int = 1) -> torch.Tensor:
    """Random per-image text embeddings (B, N, T, D)."""
    return randn(b, n, 5, TEXT_DIM, seed=seed)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny models gain nothing from more, and CI cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Config dict of the tiny S3 stage models (built once per test session)."""
    from jointdiff.testing.s3 import ensure_tiny_models

    return ensure_tiny_models(tmp_path_factory.getbasetemp() / "s3-tiny")
