"""Class recipes: how each DreamBooth-like class is assembled from parts (object frame: y up, height ~1).

Each recipe takes ``(rng, palette)`` and returns parts with the main body first (its colour and
texture name the subject). Recipes draw proportions, part shapes, colours, textures and optional
accessories from ``rng``, so two subjects of one class differ in identity, not only in colour.
"""

from __future__ import annotations

from jointdiff.data.toyworld.recipes.common import Recipe
from jointdiff.data.toyworld.recipes.household import backpack, bowl, can, candle, clock, glasses, shoe, teapot, vase
from jointdiff.data.toyworld.recipes.toys import car, cartoon, duck, figure, monster, plushie, robot
from jointdiff.data.toyworld.recipes.unusual import UNUSUAL_CLASSES, quadruped, unusual_assemblage, unusual_swap

__all__ = ["CLASS_RECIPES", "UNUSUAL_CLASSES", "Recipe", "class_words", "unusual_assemblage", "unusual_swap"]

# recipe -> (builder, class word, sampling weight, live)
CLASS_RECIPES: dict[str, tuple[Recipe, str, float, bool]] = {
    "figure": (figure, "toy", 1.0, False),
    "duck": (duck, "toy", 0.6, False),
    "car": (car, "toy", 0.6, False),
    "monster": (monster, "toy", 0.6, False),
    "robot": (robot, "robot", 1.0, False),
    "vase": (vase, "vase", 1.0, False),
    "teapot": (teapot, "teapot", 1.0, False),
    "backpack": (backpack, "backpack", 1.0, False),
    "can": (can, "can", 0.8, False),
    "candle": (candle, "candle", 0.8, False),
    "bowl": (bowl, "bowl", 0.8, False),
    "clock": (clock, "clock", 0.8, False),
    "sneaker": (shoe, "sneaker", 0.8, False),
    "boot": (lambda r, p: shoe(r, p, boot=True), "boot", 0.6, False),
    "plushie": (plushie, "stuffed animal", 1.0, False),
    "glasses": (glasses, "glasses", 0.6, False),
    "cartoon": (cartoon, "cartoon", 0.6, False),
    "dog": (quadruped, "dog", 1.8, True),
    "cat": (lambda r, p: quadruped(r, p, cat=True), "cat", 1.2, True),
}


def class_words() -> list[str]:
    """Every class word a toy subject can have (regular recipes and the unusual ones), sorted."""
    return sorted({c for _, c, _, _ in CLASS_RECIPES.values()} | set(UNUSUAL_CLASSES))
