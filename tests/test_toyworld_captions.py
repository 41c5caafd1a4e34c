"""Toy world captions: the DreamBooth prompt lists, training captions, prompt parsing, vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from jointdiff.data.toyworld.captions import (
    KIND,
    STYLES,
    TEMPLATES,
    caption,
    parse_prompt,
    prompt_conditions,
    prompt_templates,
    vocabulary,
    words,
)
from jointdiff.data.toyworld.generator import make_set
from jointdiff.data.toyworld.recipes import class_words


def test_dreambooth_prompt_lists():
    obj, live = prompt_templates(False), prompt_templates(True)
    assert len(obj) == len(live) == 25 and len(set(obj)) == len(set(live)) == 25
    assert obj[:10] == live[:10] and obj[20:] == live[20:]
    assert obj[0] == "a {} in the jungle" and obj[11] == "a {} with a tree and autumn leaves in the background"
    assert live[13] == "a {} wearing a black top hat and a monocle" and obj[24] == "a cube shaped {}"
    assert all(t.count("{}") == 1 for t in obj + live)
    assert {KIND[c] for c in prompt_conditions(True)} == {"scene", "outfit", "attribute"}


def test_caption_forms():
    assert caption("snow", "toy", "green striped") == "a green striped toy in the snow"
    assert caption("milk", "ornament", "orange") == "an orange ornament floating in an ocean of milk"
    assert caption("red", "vase", "blue dotted") == "a red dotted vase"  # the attribute replaces the colour
    assert caption("beach", "dog", "", "sketch") == "a pencil sketch of a dog on the beach"
    with pytest.raises(ValueError, match="unknown condition"):
        caption("moon", "toy")


@pytest.mark.parametrize("style", [None, *STYLES])
def test_parse_inverts_caption(style):
    for cond in TEMPLATES:
        for phrase in ("toy", "sks stuffed animal", "orange checkered gadget"):
            p = parse_prompt(caption(cond, phrase, style=style))
            assert (p.condition, p.style) == (cond, style)
            assert p.phrase == phrase


def test_parse_prompt_of_benchmark_fill_and_errors():
    assert parse_prompt("a sks dog wearing a red hat").condition == "red_hat"
    assert parse_prompt("A red toy.").condition == "red"
    assert parse_prompt("a toy on top of a purple rug in a forest").condition == "purple_rug_forest"
    with pytest.raises(ValueError, match="matches no toy-world template"):
        parse_prompt("a toy on the moon")


def test_generated_captions_are_in_vocabulary():
    classes = class_words()
    vocab = set(vocabulary(classes))
    seen = [v.caption for i in range(40) for v in make_set(i, resolution=8).views]
    assert all(set(words(c)) <= vocab for c in seen)
    assert any(c.startswith(tuple(STYLES.values())) for c in seen)  # stylised captions occur (p = 0.5)
    styled = np.mean([c.startswith(tuple(STYLES.values())) for c in seen])
    assert 0.3 < styled < 0.7
