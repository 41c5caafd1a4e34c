"""Procedural backgrounds for the DreamBooth prompts (jungle, snow, beach, ..., white rug) and neutral settings.

A painter takes ``(rng, h, w, cx, base)`` (the subject's horizontal centre and ground row, in
image heights) and returns a :class:`Backdrop`: the background, the kind of surface the subject
stands on (``ground`` casts a shadow; ``water``/``milk`` submerge and reflect; ``mirror``
reflects) and an optional overlay painted in front of the subject (snowflakes, sunflowers,
the water surface), which the foreground mask respects. Each scene is varied by ``rng``
(colours, layout, horizon) and drawn with whole-array numpy operations.
"""

from __future__ import annotations

from jointdiff.data.toyworld.scenes.nature import (
    autumn_tree,
    beach,
    dirt_road,
    jungle,
    mountain,
    purple_rug_forest,
    snow,
    sunflowers,
    wheat_field,
)
from jointdiff.data.toyworld.scenes.paint import Backdrop, Painter
from jointdiff.data.toyworld.scenes.surfaces import (
    milk,
    mirror,
    pink_fabric,
    room,
    studio,
    table,
    water,
    white_rug,
    wooden_floor,
)
from jointdiff.data.toyworld.scenes.urban import blue_house, city, cobblestone, crowded_street, eiffel_tower

__all__ = ["NEUTRAL_SCENES", "SCENES", "Backdrop", "Painter"]

# scene key -> painter; keys are the condition names used in captions.py
SCENES: dict[str, Painter] = {
    "jungle": jungle,
    "snow": snow,
    "beach": beach,
    "cobblestone": cobblestone,
    "pink_fabric": pink_fabric,
    "wooden_floor": wooden_floor,
    "city": city,
    "mountain": mountain,
    "blue_house": blue_house,
    "purple_rug_forest": purple_rug_forest,
    "wheat_field": wheat_field,
    "autumn_tree": autumn_tree,
    "eiffel_tower": eiffel_tower,
    "water": water,
    "milk": milk,
    "sunflowers": sunflowers,
    "mirror": mirror,
    "crowded_street": crowded_street,
    "dirt_road": dirt_road,
    "white_rug": white_rug,
    "studio": studio,
    "table": table,
    "room": room,
}
NEUTRAL_SCENES = ("studio", "table", "room")  # everyday settings: references, attribute and outfit prompts
