"""Prompt writers for GPT(l, object) and GPT(l, scene) (supplementary Algorithm 1, lines 10 and 19).

Three backends behind :class:`~jointdiff.data.s3.stages.PromptWriter`:

- ``template``: offline word lists, deterministic in the seed (the default; no model, no network).
- ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp, TGI).
- ``transformers``: a local causal LM loaded from a Hub id or a directory.

Chat backends retry timeouts and connection errors ``retries`` times, then raise
:class:`~jointdiff.data.s3.stages.LLMError`: the pipeline skips that item and counts it.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np

from jointdiff.common.seeding import seeded
from jointdiff.data.s3.config import LLMConfig
from jointdiff.data.s3.stages import LLMError

_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey", "teal")
_MATERIALS = ("wooden", "metal", "plastic", "ceramic", "glass", "leather", "woollen", "knitted", "stone", "rubber")
_DETAILS = (
    "with a glossy finish",
    "with rounded edges",
    "with a striped pattern",
    "with small white dots",
    "with a worn, vintage look",
    "with a bold geometric pattern",
    "with gold trim",
    "with a matte texture",
)
_PLACES = (
    "on a wooden table in a sunny kitchen",
    "on a sandy beach at sunset",
    "in a snowy forest",
    "on a city street at night",
    "on a shelf in a cosy library",
    "in a grassy meadow with flowers",
    "on a marble floor in a museum",
    "on a desk next to a laptop",
    "on a rock by a mountain lake",
    "in a colourful children's playroom",
)


class TemplatePromptWriter:
    """Offline prompt writer: object details and scenes drawn from word lists by the seed."""

    def object_prompt(self, name: str, seed: int) -> str:
        """An object-centric prompt t_o for ``name`` (Algorithm 1, line 10)."""
        rng = np.random.default_rng([seed, 1])
        colour, material, detail = rng.choice(_COLOURS), rng.choice(_MATERIALS), rng.choice(_DETAILS)
        return f"a {colour} {material} {name} {detail}"

    def scene_prompt(self, name: str, seed: int) -> str:
        """A scene-centric prompt t_s involving ``name`` (Algorithm 1, line 19)."""
        rng = np.random.default_rng([seed, 2])
        return f"a photo of a {name} {rng.choice(_PLACES)}"


_MARKER = re.compile(r"^(?:[-*\u2022]|\d+[.)])\s+")  # a list marker: "- ", "* ", "1. ", "2) "


def clean_answer(text: str) -> str:
    """First non-empty line of a model answer, without list markers or surrounding quotes."""
    for line in text.strip().splitlines():
        line = _MARKER.sub("", line.strip().strip("\"'").strip()).strip().strip("\"'").strip()
        if line:
            return line
    return ""


class ChatPromptWriter:
    """Prompt writer over a ``complete(instruction, seed) -> str`` function, with retries and backoff."""

    def __init__(
        self, complete: Callable[[str, int], str], config: LLMConfig, retry_on: tuple[type[BaseException], ...]
    ) -> None:
        self.complete = complete
        self.config = config
        self.retry_on = retry_on
        self.retried = 0  # attempts beyond the first, over this writer's lifetime

    def _ask(self, instruction: str, seed: int) -> str:
        cfg = self.config
        last: BaseException | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(cfg.backoff_s * 2 ** (attempt - 1))
            try:
                answer = clean_answer(self.complete(instruction, seed))
            except self.retry_on as e:
                last = e
                continue
            if not answer:
                raise LLMError("empty answer from the prompt writer")
            return answer
        raise LLMError(f"prompt writer failed after {cfg.retries + 1} attempts: {type(last).__name__}: {last}")

    def object_prompt(self, name: str, seed: int) -> str:
        """GPT(l, object) (Algorithm 1, line 10)."""
        return self._ask(self.config.object_instruction.format(object=name), seed)

    def scene_prompt(self, name: str, seed: int) -> str:
        """GPT(l, scene) (Algorithm 1, line 19)."""
        return self._ask(self.config.scene_instruction.format(object=name), seed)


class _RetryableHTTPError(OSError):
    """HTTP 429 or 5xx: the server may answer on a later attempt."""


def openai_complete(config: LLMConfig) -> Callable[[str, int], str]:
    """``complete`` for an OpenAI-compatible ``POST {url}/chat/completions`` endpoint (stdlib only)."""
    url = config.url.rstrip("/") + "/chat/completions"
    key = os.environ.get(config.api_key_env, "")

    def complete(instruction: str, seed: int) -> str:
        body = {
            "model": config.source,
            "messages": [{"role": "user", "content": instruction}],
            "temperature": config.temperature,
            "max_tokens": config.max_new_tokens,
            "seed": seed,
        }
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if e.code == 429 or e.code >= 500:
                raise _RetryableHTTPError(f"HTTP {e.code} from {url}") from e
            raise LLMError(f"HTTP {e.code} from {url}: {e.reason}") from e
        except json.JSONDecodeError as e:
            raise LLMError(f"{url} did not answer JSON") from e
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as e:
            raise LLMError(f"{url} answered without choices[0].message.content") from e

    return complete


class TransformersComplete:
    """``complete`` with a local causal LM (``AutoModelForCausalLM``); sampling is seeded per call."""

    def __init__(self, config: LLMConfig, device: str, dtype: object) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(config.source, revision=config.revision)
        self.model = AutoModelForCausalLM.from_pretrained(config.source, revision=config.revision, dtype=dtype)
        self.model.to(device).eval()

    def __call__(self, instruction: str, seed: int) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = instruction + "\n"
        inputs = tok(text, return_tensors="pt").to(self.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        devices = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
        with seeded(seed, devices), torch.no_grad():  # HF sampling draws from the global generator: seeded, locally
            out = self.model.generate(
                **inputs,
                do_sample=True,
                temperature=self.config.temperature,
                max_new_tokens=self.config.max_new_tokens,
                pad_token_id=pad,
            )
        new = out[0, inputs["input_ids"].shape[1] :]  # (T_in + T_new,) -> (T_new,)
        return tok.decode(new, skip_special_tokens=True)


def build_prompt_writer(config: LLMConfig, device: str = "cpu", dtype: object = None) -> object:
    """The prompt writer of ``config.backend``; model loading errors are one line naming the model."""
    if config.backend == "template":
        return TemplatePromptWriter()
    if config.backend == "openai":
        if not config.source:
            raise ValueError("s3 config: llm.source must name the endpoint's model for backend 'openai'")
        retry_on = (TimeoutError, ConnectionError, urllib.error.URLError, _RetryableHTTPError)
        return ChatPromptWriter(openai_complete(config), config, retry_on=retry_on)
    from jointdiff.data.s3.adapters_diffusers import load_error

    try:
        complete = TransformersComplete(config, device, dtype)
    except Exception as e:
        raise load_error("llm", config.source, e) from e
    return ChatPromptWriter(complete, config, retry_on=())
