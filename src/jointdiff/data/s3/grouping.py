"""Grouping instances of a collage into same-subject sets (supplementary Algorithm 1, lines 13-15).

Pure functions on arrays: CLIP features -> affinity matrix A -> adjacency M (A_ij > threshold)
-> connected components -> sets of bounded size.
"""

from __future__ import annotations

import numpy as np


def affinity(features: np.ndarray) -> np.ndarray:
    """Cosine-similarity matrix A_ij = CLIP(x_i, x_j) of (K, D) image features (Algorithm 1, line 13)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (K, D), got shape {f.shape}")
    f = f / np.clip(np.linalg.norm(f, axis=1, keepdims=True), 1e-12, None)
    return f @ f.T  # (K, D) @ (D, K) -> (K, K)


def adjacency(a: np.ndarray, threshold: float = 0.95) -> np.ndarray:
    """M_ij = 1 if A_ij > threshold else 0, off the diagonal (Algorithm 1, line 14)."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"affinity must be a square (K, K) matrix, got shape {a.shape}")
    m = a > threshold
    m = m & m.T  # an edge needs both directions: robust to a slightly asymmetric A
    np.fill_diagonal(m, False)
    return m


def connected_components(m: np.ndarray) -> list[list[int]]:
    """Connected components of the graph with adjacency ``m`` (Algorithm 1, line 15).

    Each component is a sorted list of node indices; components are ordered by their smallest node.
    """
    m = np.asarray(m, dtype=bool)
    k = m.shape[0]
    seen = np.zeros(k, dtype=bool)
    components = []
    for start in range(k):
        if seen[start]:
            continue
        stack, comp = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in np.flatnonzero(m[i] & ~seen):
                seen[j] = True
                stack.append(int(j))
        components.append(sorted(comp))
    return components


def split_component(component: list[int], max_size: int) -> list[list[int]]:
    """Cut a component into consecutive chunks of at most ``max_size``, as evenly as possible."""
    n = len(component)
    parts = -(-n // max_size)  # ceil(n / max_size)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [component[bounds[i] : bounds[i + 1]] for i in range(parts)]


def group_instances(
    a: np.ndarray, threshold: float = 0.95, min_size: int = 2, max_size: int = 4
) -> tuple[list[list[int]], int]:
    """Sets of instance indices from an affinity matrix, and how many instances were left out.

    Components smaller than ``min_size`` are dropped (a lone instance has no same-subject partner);
    larger than ``max_size`` are split evenly (the paper's sets hold 2-4 images).
    """
    sets, dropped = [], 0
    for comp in connected_components(adjacency(a, threshold)):
        for part in split_component(comp, max_size):
            if len(part) >= min_size:
                sets.append(part)
            else:
                dropped += len(part)
    return sets, dropped
