"""S3 prompt writers: templates, an OpenAI-compatible endpoint (a local server), a local causal LM."""

from __future__ import annotations

import time

import pytest

from jointdiff.data.s3.config import LLMConfig
from jointdiff.data.s3.llm import TemplatePromptWriter, build_prompt_writer, clean_answer
from jointdiff.data.s3.stages import LLMError, PromptWriter
from jointdiff.testing.s3 import FakeChatServer


@pytest.fixture
def server():
    s = FakeChatServer(slow_word="scene", delay=1.0)
    yield s
    s.close()


def openai_config(url: str, **kw) -> LLMConfig:
    return LLMConfig(backend="openai", source="tiny-chat", url=url, timeout_s=0.3, retries=2, backoff_s=0.0, **kw)


def test_template_writer_is_deterministic_and_mentions_the_object():
    w = TemplatePromptWriter()
    assert isinstance(w, PromptWriter)
    assert w.object_prompt("teapot", 7) == w.object_prompt("teapot", 7)
    assert len({w.scene_prompt("teapot", s) for s in range(20)}) > 3  # seeds give variety
    assert all("teapot" in w.scene_prompt("teapot", s) for s in range(5))


def test_clean_answer():
    assert clean_answer('\n  "1. A red mug."  \nmore') == "A red mug."
    assert clean_answer("   \n ") == ""


def test_openai_backend_answers_and_sends_model_seed_key(server, monkeypatch):
    monkeypatch.setenv("TINY_KEY", "sk-test")
    w = build_prompt_writer(openai_config(server.url, api_key_env="TINY_KEY"))
    assert w.object_prompt("mug", 11) == "A tiny-chat answer, seed 11."  # first line, quotes and numbering removed
    req = server.requests[-1]
    assert req["auth"] == "Bearer sk-test" and req["body"]["model"] == "tiny-chat"
    assert "mug" in req["body"]["messages"][0]["content"]


def test_openai_timeout_is_retried_then_raises(server):
    w = build_prompt_writer(openai_config(server.url))
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="failed after 3 attempts: TimeoutError"):
        w.scene_prompt("mug", 1)  # the server answers scene instructions after 1 s; the timeout is 0.3 s
    assert time.perf_counter() - t0 < 1.5  # 3 x 0.3 s, no waiting for the server
    assert sum("scene" in r["body"]["messages"][0]["content"] for r in server.requests) == 3
    assert w.retried == 2


def test_unreachable_endpoint_is_an_llm_error():
    w = build_prompt_writer(LLMConfig(backend="openai", source="m", url="http://127.0.0.1:9", retries=1, backoff_s=0))
    with pytest.raises(LLMError, match="after 2 attempts"):
        w.object_prompt("mug", 0)


def test_transformers_backend_with_a_tiny_causal_lm(tmp_path):
    from jointdiff.testing.s3 import save_tiny_llm

    save_tiny_llm(tmp_path / "lm")
    cfg = LLMConfig(backend="transformers", source=str(tmp_path / "lm"), max_new_tokens=8, retries=0)
    w = build_prompt_writer(cfg)
    calls = []
    inner = w.complete
    w.complete = lambda text, seed: calls.append((text, seed)) or inner(text, seed)
    a, b, c = w.object_prompt("mug", 3), w.object_prompt("mug", 3), w.object_prompt("mug", 4)
    assert a and a == b != c  # sampling is seeded per call: same seed, same prompt
    assert calls[0] == (cfg.object_instruction.format(object="mug"), 3)
    with pytest.raises(ValueError, match=r"could not load the llm model '.*missing'"):
        build_prompt_writer(LLMConfig(backend="transformers", source=str(tmp_path / "missing")))
