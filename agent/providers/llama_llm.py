"""Local LLM: a GGUF chat model run by llama-cpp-python, as a livekit-agents LLM plugin.

Tokens are generated in a worker thread and streamed to the event loop as they
come, so TTS can start on the first sentence. An interrupted turn stops the
generation at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import shortuuid

logger = logging.getLogger("parley.llm")

_ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class LlamaOptions:
    model_path: Path
    n_ctx: int = 2048
    n_threads: int = 2
    max_tokens: int = 96
    temperature: float = 0.0  # greedy: short factual answers, reproducible tests
    repeat_penalty: float = 1.1
    # A small model drifts on long histories; the newest turns matter most on a call.
    max_history_messages: int = 12
    # Instructions to pre-process at load: the first call then skips llama.cpp's cold start
    # (~200 ms) and reuses the cached prompt prefix.
    warmup_system: str = ""


class LlamaLLM(llm.LLM):
    def __init__(self, opts: LlamaOptions) -> None:
        super().__init__()
        from llama_cpp import Llama  # heavy import, only where used

        self._opts = opts
        t0 = time.perf_counter()
        self._llama = Llama(
            model_path=str(opts.model_path),
            n_ctx=opts.n_ctx,
            n_threads=opts.n_threads,
            n_batch=256,
            verbose=False,
        )
        # llama.cpp contexts are not thread-safe: one generation at a time per process.
        self._lock = threading.Lock()
        warm = [{"role": "system", "content": opts.warmup_system}] if opts.warmup_system else []
        self._llama.create_chat_completion(
            messages=[*warm, {"role": "user", "content": "Hello"}], max_tokens=1  # type: ignore[list-item]
        )
        logger.info("llama model %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return self._opts.model_path.stem

    @property
    def provider(self) -> str:
        return "local"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LlamaStream:
        # A 135M model cannot call tools reliably, so tools are not offered to it.
        return LlamaStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    def messages(self, chat_ctx: llm.ChatContext) -> list[dict[str, str]]:
        """Chat-template messages: instructions first, then the recent turns in order.

        System notes inside the conversation keep their place (the template allows it),
        consecutive same-role turns are merged, and old turns are dropped first.
        """
        head: list[str] = []
        turns: list[dict[str, str]] = []
        for item in chat_ctx.items:
            if item.type != "message" or item.role not in _ROLE_MAP:
                continue
            text = (item.text_content or "").strip()
            if not text:
                continue
            role = _ROLE_MAP[item.role]
            if role == "system" and not turns:
                head.append(text)
            elif turns and turns[-1]["role"] == role:
                turns[-1]["content"] += " " + text
            else:
                turns.append({"role": role, "content": text})
        turns = turns[-self._opts.max_history_messages :]
        # A conversation opening with the assistant (our fixed greeting) sends SmolLM2 off
        # into French ("Parley"); the greeting carries nothing the model needs.
        while turns and turns[0]["role"] == "assistant":
            turns = turns[1:]
        system = [{"role": "system", "content": "\n".join(head)}] if head else []
        return system + turns

    def generate(self, messages: list[dict[str, str]], on_token: Any, stop: threading.Event) -> tuple[int, int]:
        """Blocking generation; calls on_token(text) per token. Returns (prompt, completion) tokens."""
        completion_tokens = 0
        with self._lock:
            stream = self._llama.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                max_tokens=self._opts.max_tokens,
                temperature=self._opts.temperature,
                repeat_penalty=self._opts.repeat_penalty,
            )
            for chunk in stream:
                if stop.is_set():
                    break
                delta = chunk["choices"][0].get("delta", {}).get("content")  # type: ignore[index,union-attr]
                if delta:
                    completion_tokens += 1
                    on_token(delta)
            prompt_tokens = int(getattr(self._llama, "n_tokens", 0)) - completion_tokens
        return max(prompt_tokens, 0), completion_tokens


class LlamaStream(llm.LLMStream):
    def __init__(
        self,
        llm_: LlamaLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._llama_llm = llm_

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        request_id = shortuuid("llama_")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()
        messages = self._llama_llm.messages(self._chat_ctx)

        def on_token(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def run() -> tuple[int, int]:
            try:
                return self._llama_llm.generate(messages, on_token, stop)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        fut = loop.run_in_executor(None, run)
        try:
            while (text := await queue.get()) is not None:
                self._event_ch.send_nowait(
                    llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=text))
                )
            prompt_tokens, completion_tokens = await fut
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    usage=llm.CompletionUsage(
                        completion_tokens=completion_tokens,
                        prompt_tokens=prompt_tokens,
                        total_tokens=prompt_tokens + completion_tokens,
                    ),
                )
            )
        finally:
            stop.set()  # interrupted or done: free the model for the next turn
