"""S3 test scaffolding: the tiny stage models built once per session, a tiny causal LM, a fake chat server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RayCluster:
    """A running cluster: the address to join and the process id of its ``ray start`` process."""

    address: str
    head_pid: int


@contextmanager
def ray_cluster(cpus: int = 4, timeout: float = 240) -> Iterator[RayCluster]:
    """A Ray cluster of this machine started with ``ray start --head`` (a temp dir of its own, no token auth: a
    driver that imported ray before a token was set would not present it), connected to as the driver. On exit the driver disconnects and every process the cluster started is
    ended by its id (``ray stop`` would end every Ray process of the machine). The temp dir is short:
    Ray's unix sockets live under it, and their paths must fit in 107 bytes."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    import ray

    from jointdiff.testing.probe import free_port

    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    auth = {"RAY_AUTH_MODE": "disabled"}  # for the head and the drivers this process starts (not ~/.ray's token)
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    args = [ray_cli, "start", "--head", "--block", "--port", str(port), "--num-cpus", str(cpus)]
    args += ["--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp]
    env = dict(os.environ, RAY_worker_niceness="0")  # workers as nice as this process (Ray adds 15 by default)
    log = open(os.path.join(temp, "ray-start.log"), "w")  # noqa: SIM115 (open for the cluster's life)
    head = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if head.poll() is not None:
                tail = Path(temp, "ray-start.log").read_text()[-2000:]
                raise RuntimeError(f"ray start exited with status {head.returncode}:\n{tail}")
            try:
                ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
                break
            except Exception:  # the head is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        yield RayCluster(f"127.0.0.1:{port}", head.pid)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _end(head.pid)
        head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _end(pid: int) -> None:
    """End process ``pid`` and every process it started (by their ids): SIGTERM, then SIGKILL after 30 s."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=30)
    for p in alive:
        with suppress(psutil.NoSuchProcess):
            p.kill()


def busy_actor_processes(head_pid: int, actor: str = "MapWorker") -> list[int]:
    """PIDs of the cluster's actor processes of class ``actor`` that are running a shard now: Ray sets the
    process title ``ray::<class>.<method>`` while a method runs and ``ray::<class>`` when idle, and Ray Data's
    map worker runs a block in ``submit``. Only those: killing one in ``get_location`` or its readiness call
    fails the whole pool instead of retrying a task ("cancelled before it started running")."""
    import psutil

    busy = []
    for p in psutil.Process(head_pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and actor in title and title.split(")")[-1].startswith(".submit"):
            busy.append(p.pid)
    return busy


def _run_ray(settings: dict[str, Any], out: str, address: str) -> Any:
    from jointdiff.data.s3.config import config_from_dict
    from jointdiff.data.s3.pipeline_ray import run_ray

    return run_ray(config_from_dict(settings), out, address=address, progress=False)


def run_ray_in_a_fresh_process(settings: dict[str, Any], out: str | Path, address: str) -> Any:
    """``run_ray`` on the cluster at ``address`` from a new driver process (spawned), returning its report.

    A test process that already ran Ray Data on another Ray (``ray.init()``, then ``ray.shutdown()``) cannot run an
    actor pool on a second cluster on Ray 2.60: the pool's actors die during initialisation ("cancelled before it
    started running"), every time. The CLI runs one job per process, so only tests need this."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run_ray, settings, str(out), address).result()
