"""S3 test scaffolding: the tiny stage models built once per session, a tiny causal LM, a fake chat server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jointdiff.common.seeding import seeded
from jointdiff.data.s3.tiny import byte_tokenizer, save_tiny_models


def save_tiny_llm(path: str | Path) -> None:
    """A tiny random GPT-2 causal LM with a byte-level tokenizer (the ``transformers`` LLM backend)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = byte_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=256,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with seeded(0):
        model = GPT2LMHeadModel(config)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))


def ensure_tiny_models(root: str | Path) -> dict[str, Any]:
    """:func:`save_tiny_models` once per directory: later calls reuse what ``root/config.json`` names."""
    root = Path(root)
    marker = root / "config.json"
    if not marker.exists():
        config = save_tiny_models(root)
        tmp = root / ".config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(marker)
    return json.loads(marker.read_text())


class FakeChatServer:
    """A local OpenAI-compatible ``/chat/completions`` endpoint that records its requests (for tests and trials).

    Instructions that mention ``slow_word`` are answered after ``delay`` seconds (a timeout).
    """

    def __init__(self, slow_word: str = "", delay: float = 0.0) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                text = body["messages"][0]["content"]
                if slow_word and slow_word in text:
                    time.sleep(delay)
                answer = f'"1. A {body["model"]} answer, seed {body["seed"]}."\nsecond line'
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
