"""Captions and prompts of the toy world: the DreamBooth prompt lists, training captions, styles, a word vocabulary.

Each *condition* (a scene, an attribute or an outfit) has one DreamBooth prompt template with a
"{}" for the subject phrase. Training captions fill it with a descriptor and the class word
("a green striped toy in the snow"), as BLIP captions of the paper's S3 data describe the
image; benchmark prompts fill it with the class word only. Stylised images get the style in
front ("a pencil sketch of a green toy in the snow").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# The DreamBooth benchmark prompts (object and live lists, 25 each), keyed by condition.
SCENE_PROMPTS: tuple[tuple[str, str], ...] = (
    ("jungle", "a {} in the jungle"),
    ("snow", "a {} in the snow"),
    ("beach", "a {} on the beach"),
    ("cobblestone", "a {} on a cobblestone street"),
    ("pink_fabric", "a {} on top of pink fabric"),
    ("wooden_floor", "a {} on top of a wooden floor"),
    ("city", "a {} with a city in the background"),
    ("mountain", "a {} with a mountain in the background"),
    ("blue_house", "a {} with a blue house in the background"),
    ("purple_rug_forest", "a {} on top of a purple rug in a forest"),
    ("wheat_field", "a {} with a wheat field in the background"),
    ("autumn_tree", "a {} with a tree and autumn leaves in the background"),
    ("eiffel_tower", "a {} with the Eiffel Tower in the background"),
    ("water", "a {} floating on top of water"),
    ("milk", "a {} floating in an ocean of milk"),
    ("sunflowers", "a {} on top of green grass with sunflowers around it"),
    ("mirror", "a {} on top of a mirror"),
    ("crowded_street", "a {} on top of the sidewalk in a crowded street"),
    ("dirt_road", "a {} on top of a dirt road"),
    ("white_rug", "a {} on top of a white rug"),
)
OUTFIT_PROMPTS: tuple[tuple[str, str], ...] = (
    ("red_hat", "a {} wearing a red hat"),
    ("santa_hat", "a {} wearing a santa hat"),
    ("rainbow_scarf", "a {} wearing a rainbow scarf"),
    ("top_hat_monocle", "a {} wearing a black top hat and a monocle"),
    ("chef", "a {} in a chef outfit"),
    ("firefighter", "a {} in a firefighter outfit"),
    ("police", "a {} in a police outfit"),
    ("pink_glasses", "a {} wearing pink glasses"),
    ("yellow_shirt", "a {} wearing a yellow shirt"),
    ("wizard", "a {} in a purple wizard outfit"),
)
ATTRIBUTE_PROMPTS: tuple[tuple[str, str], ...] = (
    ("red", "a red {}"),
    ("purple", "a purple {}"),
    ("shiny", "a shiny {}"),
    ("wet", "a wet {}"),
    ("cube", "a cube shaped {}"),
)
NEUTRAL_PROMPTS: tuple[tuple[str, str], ...] = (  # training and reference images only
    ("studio", "a photo of a {}"),
    ("table", "a {} on a table"),
    ("room", "a {} in a room"),
)
OBJECT_CONDITIONS = tuple(k for k, _ in SCENE_PROMPTS + ATTRIBUTE_PROMPTS)  # 25, DreamBooth order
LIVE_CONDITIONS = tuple(k for k, _ in SCENE_PROMPTS[:10] + OUTFIT_PROMPTS + ATTRIBUTE_PROMPTS)  # 25
TEMPLATES: dict[str, str] = dict(SCENE_PROMPTS + OUTFIT_PROMPTS + ATTRIBUTE_PROMPTS + NEUTRAL_PROMPTS)
KIND: dict[str, str] = {
    **{k: "scene" for k, _ in SCENE_PROMPTS},
    **{k: "outfit" for k, _ in OUTFIT_PROMPTS},
    **{k: "attribute" for k, _ in ATTRIBUTE_PROMPTS},
    **{k: "neutral" for k, _ in NEUTRAL_PROMPTS},
}

# The stylisation stage (JeDi sec. 3.1: InstructPix2Pix with random style prompts, p = 0.5).
STYLES: dict[str, str] = {
    "watercolor": "a watercolor painting",
    "sketch": "a pencil sketch",
    "pixel": "pixel art",
    "oil": "an oil painting",
    "pop_art": "a pop art poster",
    "vintage": "a vintage photo",
    "neon": "a neon drawing",
}


@dataclass(frozen=True)
class ParsedPrompt:
    """What a prompt asks for: condition key, the subject phrase in its "{}" slot, and a style (or None)."""

    condition: str
    phrase: str
    style: str | None = None


def prompt_conditions(live: bool) -> tuple[str, ...]:
    """The 25 benchmark conditions of a subject, in DreamBooth order (live subjects get outfits)."""
    return LIVE_CONDITIONS if live else OBJECT_CONDITIONS


def prompt_templates(live: bool) -> list[str]:
    """The 25 DreamBooth prompt templates (one "{}" each) of an object or live subject."""
    return [TEMPLATES[k] for k in prompt_conditions(live)]


def caption(
    condition: str,
    class_word: str,
    descriptor: str = "",
    style: str | None = None,
) -> str:
    """A caption: the condition's template filled with ``descriptor class_word``, the style in front."""
    if condition not in TEMPLATES:
        raise ValueError(f"unknown condition {condition!r}")
    if condition in ("red", "purple"):  # the attribute replaces the subject's own colour word
        descriptor = " ".join(w for w in descriptor.split() if w not in COLOR_WORDS_SET)
    template = (
        "a {}" if style is not None and condition == "studio" else TEMPLATES[condition]
    )  # not "a sketch of a photo"
    text = with_article(template.format(f"{descriptor} {class_word}".strip()))
    if style is not None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
        text = f"{STYLES[style]} of {text}"
    return text


def with_article(text: str) -> str:
    """Fix the indefinite article before a vowel ("a orange toy" -> "an orange toy")."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def sample_descriptor(rng: np.random.Generator, descriptor: str) -> str:
    """Caption adjectives as a captioner would vary them: all (60%), the colour only (20%) or none (20%)."""
    u = rng.random()
    if u < 0.6:
        return descriptor
    if u < 0.8:
        return descriptor.split()[0] if descriptor else ""
    return ""


def _norm(text: str) -> str:
    """Lower case, single spaces, no final period, "an" read as "a" (so articles never decide a match)."""
    return " ".join("a" if w == "an" else w for w in text.lower().strip().rstrip(".").split())


def parse_prompt(prompt: str) -> ParsedPrompt:
    """The condition a prompt asks for (the most specific matching template); ValueError if none matches."""
    text = _norm(prompt)
    style = None
    for key, phrase in STYLES.items():
        phrase = _norm(phrase)
        if text.startswith(phrase + " of "):
            style, text = key, text[len(phrase) + 4 :]
            break
    best: tuple[int, str, str] | None = None
    for key, template in TEMPLATES.items():
        pre, post = (_norm(p) for p in template.split("{}"))
        pre = pre + " " if pre else ""
        post = " " + post if post else ""
        if text.startswith(pre) and text.endswith(post) and len(text) > len(pre) + len(post):
            fixed = len(pre) + len(post)
            if best is None or fixed > best[0]:
                best = (fixed, key, text[len(pre) : len(text) - len(post)])
    if best is None and style is not None and text.startswith("a "):  # a stylised studio image: "<style> of a {}"
        best = (0, "studio", text[2:])
    if best is None:
        raise ValueError(
            f"prompt {prompt!r} matches no toy-world template (see jointdiff.data.toyworld.captions.TEMPLATES)"
        )
    return ParsedPrompt(condition=best[1], phrase=best[2].strip(), style=style)


COLOR_WORDS_SET = frozenset(
    ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown", "white", "grey", "black")
)
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-case word tokens of a caption (punctuation and digits dropped)."""
    return _WORD.findall(text.lower())


def vocabulary(class_words: list[str] | tuple[str, ...]) -> list[str]:
    """Every word a toy-world caption can contain, sorted (the dual encoder's vocabulary)."""
    from jointdiff.data.toyworld.parts import TEXTURE_WORDS

    vocab: set[str] = set(COLOR_WORDS_SET)
    for text in [*TEMPLATES.values(), *STYLES.values(), *class_words, *TEXTURE_WORDS.values()]:
        vocab.update(words(text.replace("{}", " ")))
    vocab.update(("of", "sks"))
    return sorted(vocab)
