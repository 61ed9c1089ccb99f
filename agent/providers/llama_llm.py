"""Local LLM: a GGUF chat model run by llama-cpp-python, as a livekit-agents LLM plugin.

Tokens are generated in a worker thread and streamed to the event loop as they
come, so TTS can start on the first sentence. An interrupted turn stops the
generation at the next token.

The prompt is built token by token, message by message, so that each turn's
prompt extends the previous turn's tokens exactly: llama.cpp keeps the KV cache
of the longest common prefix (`Llama.generate`), so a turn only evaluates what
is new since the last reply (the caller's new words), not the whole history.
What keeps the prefix stable:
- every message is tokenized on its own between fixed role header/footer tokens,
  so re-tokenizing the history gives the same tokens every turn;
- the agent's own reply is represented by the very tokens it generated (not a
  re-tokenization of its text), as long as the history holds that text unchanged;
  a reply cut short by the caller is tokenized from what was actually spoken, which
  only costs re-evaluating that reply;
- old turns are dropped in blocks, only when the context would overflow, so the
  prefix changes once per block rather than every turn.
After a reply the model ended itself, the framing the next prompt must go on with (the
reply's end and the caller's header) is evaluated once the agent has finished speaking it
(`observe`, `prefill_next_turn`), so the next turn's first token waits only for the caller's words.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import AgentStateChangedEvent, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import shortuuid

from .. import skills
from ..priority import VOICE_FIRST

logger = logging.getLogger("parley.llm")

_ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# The caller's words so far are evaluated in pieces this long, so that the work stops within
# one piece (~40-70 ms on 2 cores) once the caller pauses.
PARTIAL_PIECE_TOKENS = 6


@dataclass
class LlamaOptions:
    model_path: Path
    n_ctx: int = 4096
    n_threads: int = 2  # evaluating a prompt (several tokens a step)
    # Writing the reply, one token a step, on one thread: with OpenMP's passive wait (agent/__init__.py)
    # a second thread costs more in wake-ups at each of the step's barriers than it computes.
    # Measured on 2 cores, Qwen 0.5B (scripts/bench_llama_threads.py): 24-31 tokens/s on one thread
    # against 23-24 on two, 27-28 against 18-19 beside a thread busy 30 % of the time; prompts
    # still evaluate on n_threads.
    decode_threads: int = 1
    n_batch: int = 256
    max_tokens: int = 96
    temperature: float = 0.0  # greedy: short factual answers, reproducible tests
    repeat_penalty: float = 1.0
    # When the history outgrows the context, the oldest turns go this many messages at a time
    # (one cache miss per block, not per turn).
    trim_block_messages: int = 8
    # Instructions to pre-process at load: the first call then skips llama.cpp's cold start
    # and reuses the cached instructions prefix.
    warmup_system: str = ""
    # Deterministic skills (agent/skills.py): arithmetic, counting, days, dates answered exactly.
    skills: bool = True


@dataclass
class GenerationStats:
    """What one generation cost; read by tests and scripts/bench_models.py."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found in the KV cache (not evaluated again)
    evaluated_tokens: int = 0  # prompt tokens llama.cpp actually evaluated (its own counter)
    completion_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    skill: str = ""  # name of the skill that answered, if one did
    finished: bool = False  # the model ended the reply itself (not stopped, not cut at max_tokens)


class ChatFormat:
    """Token framing of one chat template, so a prompt can be built message by message.

    ChatML (`<|im_start|>role ... <|im_end|>`: SmolLM2, Qwen2.5) is framed exactly. Any other
    template is rendered whole by its Jinja template (correct, but with a weaker cache hit).
    """

    def __init__(self, llama: Any) -> None:
        self._llama = llama
        meta = getattr(llama, "metadata", {}) or {}
        self.template: str = meta.get("tokenizer.chat_template", "") or ""
        self.chatml = "<|im_start|>" in self.template or not self.template
        self._cache: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self.bos: list[int] = llama.tokenize(b"", add_bos=True, special=True)
        stops = {llama.token_eos()}
        for piece in (b"<|im_end|>", b"<|endoftext|>", b"<end_of_turn>", b"<|eot_id|>"):
            ids = llama.tokenize(piece, add_bos=False, special=True)
            if len(ids) == 1:
                stops.add(ids[0])
        self.stop_ids = frozenset(stops)
        self._formatter: Any = None
        if not self.chatml:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = llama.detokenize([llama.token_eos()], special=True).decode(errors="ignore")
            bos = llama.detokenize(self.bos, special=True).decode(errors="ignore") if self.bos else ""
            self._formatter = Jinja2ChatFormatter(template=self.template, eos_token=eos, bos_token=bos)

    def _tok(self, kind: str, text: str) -> list[int]:
        key = (kind, text)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._llama.tokenize(text.encode(), add_bos=False, special=kind == "frame")
            self._cache[key] = hit
            if len(self._cache) > 512:
                self._cache.popitem(last=False)
        return hit

    def header(self, role: str) -> list[int]:
        return self._tok("frame", f"<|im_start|>{role}\n")

    def footer(self) -> list[int]:
        return self._tok("frame", "<|im_end|>\n")

    def content(self, text: str) -> list[int]:
        return self._tok("text", text)

    def render_whole(self, messages: list[dict[str, str]]) -> list[int]:
        prompt = self._formatter(messages=messages).prompt
        tokens = self._llama.tokenize(prompt.encode(), add_bos=False, special=True)
        return tokens if tokens[: len(self.bos)] == self.bos else self.bos + tokens


class LlamaLLM(llm.LLM):
    def __init__(self, opts: LlamaOptions) -> None:
        super().__init__()
        from llama_cpp import Llama  # heavy import, only where used

        self._opts = opts
        t0 = time.perf_counter()
        self._llama = Llama(
            model_path=str(opts.model_path),
            n_ctx=opts.n_ctx,
            n_threads=opts.decode_threads,
            n_threads_batch=opts.n_threads,
            n_batch=opts.n_batch,
            verbose=False,
        )
        self._format = ChatFormat(self._llama)
        # llama.cpp contexts are not thread-safe: one generation at a time per process.
        self._lock = threading.Lock()
        # Replies this model generated, by their text: the history carries text, the cache holds tokens.
        self._replies: OrderedDict[str, list[int]] = OrderedDict()
        self._fact_notes: OrderedDict[str, str] = OrderedDict()
        self._prefill_at = -1  # cache length right after a finished reply, until the next run
        self._ahead = 0  # tokens of the caller's words evaluated before this turn's prompt came
        self.last_stats = GenerationStats()
        warm = [{"role": "system", "content": opts.warmup_system}] if opts.warmup_system else []
        self.generate(self.prompt_tokens([*warm, {"role": "user", "content": "Hello"}]), lambda _t: None,
                      threading.Event(), max_tokens=1)
        logger.info("llama model %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return self._opts.model_path.stem

    @property
    def provider(self) -> str:
        return "local"

    @property
    def options(self) -> LlamaOptions:
        return self._opts

    @property
    def cached_tokens(self) -> list[int]:
        """Tokens whose keys/values llama.cpp holds right now (the evaluated prefix)."""
        return [int(t) for t in self._llama._input_ids]

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
        # A sub-1B model cannot call tools reliably, so tools are not offered to it.
        return LlamaStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    def messages(self, chat_ctx: llm.ChatContext) -> list[dict[str, str]]:
        """Chat messages in order: instructions first, then every turn.

        System notes inside the conversation keep their place (the template allows it) and
        consecutive same-role turns are merged. Old turns are not dropped here: `prompt_tokens`
        trims by tokens, in blocks, only when the context would overflow.
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
        # A conversation opening with the assistant (our fixed greeting) sends small models off
        # topic (SmolLM2 answers in French to "Parley"); the greeting carries nothing they need.
        while turns and turns[0]["role"] == "assistant":
            turns = turns[1:]
        if self._opts.skills:
            for t in turns:
                if t["role"] == "user" and (note := self._facts(t["content"])):
                    t["content"] += note
        system = [{"role": "system", "content": "\n".join(head)}] if head else []
        return system + turns

    def _facts(self, text: str) -> str:
        """Exact results for the computable parts of a request, appended for the model to use.

        Remembered per text, so a time or date computed at one turn stays the same in later
        turns' prompts (the cached prefix stays valid).
        """
        note = self._fact_notes.get(text)
        if note is None:
            found = skills.facts(text)
            note = f" (Exact result: {' '.join(found)})" if found else ""
            self._fact_notes[text] = note
            while len(self._fact_notes) > 256:
                self._fact_notes.popitem(last=False)
        return note

    def _message_tokens(self, msg: dict[str, str]) -> list[int]:
        fmt = self._format
        body = self._replies.get(msg["content"]) if msg["role"] == "assistant" else None
        if body is None:
            body = fmt.content(msg["content"])
        return fmt.header(msg["role"]) + body + fmt.footer()

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt for the next reply: a token-exact extension of the previous turn's."""
        budget = self._opts.n_ctx - self._opts.max_tokens - 8
        if not self._format.chatml:
            tokens = self._format.render_whole(messages)
            while len(tokens) > budget and len(messages) > 2:
                messages = messages[:1] + messages[3:]
                tokens = self._format.render_whole(messages)
            return tokens
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system):]
        head = list(self._format.bos)
        for m in system:
            head += self._message_tokens(m)
        bodies = [self._message_tokens(m) for m in turns]
        tail = self._format.header("assistant")
        start, block = 0, max(self._opts.trim_block_messages, 2)
        while (len(head) + sum(len(b) for b in bodies[start:]) + len(tail) > budget
               and start < len(bodies) - 1):
            start = min(start + block, len(bodies) - 1)
            while start < len(bodies) - 1 and turns[start]["role"] != "user":
                start += 1  # a trimmed history still opens with the caller
        out = head
        for b in bodies[start:]:
            out += b
        return out + tail

    def _perf(self) -> tuple[int, int] | None:
        try:
            import llama_cpp

            data = llama_cpp.llama_perf_context(self._llama._ctx.ctx)
            return int(data.n_p_eval), int(data.n_eval)
        except Exception:  # perf counters are optional in llama.cpp builds
            return None

    def generate(self, prompt: list[int] | list[dict[str, str]], on_token: Any, stop: threading.Event,
                 max_tokens: int | None = None) -> GenerationStats:
        """Blocking generation from prompt tokens (or chat messages); calls on_token(text) per piece."""
        tokens: list[int] = (self.prompt_tokens(prompt) if prompt and isinstance(prompt[0], dict)  # type: ignore[arg-type]
                             else prompt)  # type: ignore[assignment]
        stats = GenerationStats(prompt_tokens=len(tokens))
        limit = max_tokens or self._opts.max_tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        generated: list[int] = []
        text = ""
        t0 = time.perf_counter()
        with self._lock:
            stats.reused_tokens = min(cached_prefix(self._llama, tokens), len(tokens) - 1)
            before = self._perf()
            for token in self._llama.generate(
                tokens,
                top_k=1 if self._opts.temperature <= 0 else 40,
                temp=self._opts.temperature,
                repeat_penalty=self._opts.repeat_penalty,
            ):
                if not generated:
                    stats.ttft_s = time.perf_counter() - t0
                    after = self._perf()
                    stats.evaluated_tokens = (after[0] - before[0]) if after and before else (
                        len(tokens) - stats.reused_tokens)
                if token in self._format.stop_ids:
                    stats.finished = not stop.is_set()
                    break
                generated.append(token)
                piece = decoder.decode(self._llama.detokenize([token]))
                if piece:
                    text += piece
                    on_token(piece)
                if stop.is_set() or len(generated) >= limit:
                    break
                VOICE_FIRST.wait()  # the next token is evaluated once Piper has the cores back
            stats.completion_tokens = len(generated)
            self._prefill_at = self._llama.n_tokens if stats.finished else -1
        stats.total_s = time.perf_counter() - t0
        logger.info("llm reply ttft=%.0fms prompt=%d reused=%d evaluated=%s ahead=%d tokens=%d",
                    (stats.ttft_s or 0.0) * 1000, stats.prompt_tokens, stats.reused_tokens,
                    stats.evaluated_tokens, self._ahead, stats.completion_tokens)
        self._ahead = 0
        reply = text.strip()
        if reply and not stop.is_set():
            # Only a reply whose text went out whole can stand for its tokens next turn.
            self._replies[reply] = generated if text == reply else self._format.content(reply)
            self._replies.move_to_end(reply)
            while len(self._replies) > 64:
                self._replies.popitem(last=False)
        self.last_stats = stats
        return stats

    def prefill_next_turn(self) -> int:
        """Evaluate the tokens every next prompt continues a finished reply with; returns how many.

        The next prompt is `... reply <|im_end|>\n<|im_start|>user\n <caller's words> ...`: the
        five framing tokens after the reply do not depend on the caller, so they are evaluated
        now, while the reply is spoken, and not on the next turn's time to first token. Only
        when nothing ran since that reply; a next prompt that goes on differently (an
        interrupted reply kept as spoken) just re-evaluates from where it differs.
        """
        if not self._format.chatml:
            return 0
        framing = self._format.footer() + self._format.header("user")
        with self._lock:
            if self._prefill_at < 0 or self._llama.n_tokens != self._prefill_at:
                return 0
            self._prefill_at = -1
            if self._llama.n_tokens + len(framing) + self._opts.max_tokens >= self._opts.n_ctx:
                return 0  # the next prompt is trimmed anyway
            self._llama.eval(framing)
            synchronize(self._llama)  # so llama.cpp counts these tokens now, not in the next turn's figures
        return len(framing)

    def prefill_partial(self, chat_ctx: llm.ChatContext, words: str,
                        keep_going: Callable[[], bool] = lambda: True) -> int:
        """Evaluate the next prompt up to the caller's words so far; returns how many tokens.

        Called while the caller is still talking (agent/speculative_stt.py `on_partial`): the
        history and "What is the capital" are in the KV cache when "What is the capital of
        Spain?" ends the turn, whose prompt then shares that prefix, so its first token waits
        only for " of Spain?" and the framing. Words heard wrong cost nothing but this work:
        the turn's prompt re-evaluates from where it differs. Evaluated in pieces, stopping
        when `keep_going()` turns false (the caller paused: the cores go to the recognition
        that ends the turn); skipped while a reply is being written.
        """
        words = unfinished(words)
        if not self._format.chatml or not words:
            return 0
        messages = self.messages(chat_ctx)
        if messages and messages[-1]["role"] == "user":
            return 0  # the words would be merged into an earlier message: a different prompt
        tokens = self.prompt_tokens([*messages, {"role": "user", "content": words}])
        tokens = tokens[: len(tokens) - len(self._format.header("assistant")) - len(self._format.footer())]
        if len(tokens) + self._opts.max_tokens >= self._opts.n_ctx or not self._lock.acquire(blocking=False):
            return 0
        try:
            self._prefill_at = -1
            done = eval_ahead(self._llama, tokens, keep_going)
            self._ahead += done
            return done
        finally:
            self._lock.release()

    def prefill_partial_soon(self, chat_ctx: llm.ChatContext, words: str,
                             keep_going: Callable[[], bool] = lambda: True) -> None:
        """`prefill_partial` in a worker thread (from the event loop)."""
        ctx = chat_ctx.copy()
        eval_ahead_soon(lambda: self.prefill_partial(ctx, words, keep_going), words)

    def observe(self, session: rtc.EventEmitter[Any]) -> None:
        """Evaluate the next turn's framing once `session`'s agent has finished speaking.

        Not as soon as the reply is written: a short reply is written before Piper has made
        its first audio, and on 2 cores the evaluation then delays that audio by more than it
        saves the next turn (TTS first audio 120 -> 150-165 ms median on the question set).
        Once the agent listens, the caller is still to speak and the cores are idle.
        """

        def on_state(ev: AgentStateChangedEvent) -> None:
            if ev.new_state == "listening" and ev.old_state == "speaking":
                asyncio.get_running_loop().run_in_executor(None, self._prefill)

        session.on("agent_state_changed", on_state)

    def _prefill(self) -> None:
        try:
            self.prefill_next_turn()
        except Exception as e:  # an optimisation: the next turn evaluates the framing itself
            logger.warning("prefill of the next turn failed: %s", e)


def unfinished(words: str) -> str:
    """A partial transcript as the start of the sentence it will be ("" when under two words):
    without the full stop Whisper puts after the words it heard so far."""
    words = words.strip().rstrip(".,;:!?…").strip()
    return words if len(words.split()) >= 2 else ""


def cached_prefix(llama: Any, tokens: list[int]) -> int:
    """How many of `tokens` llama.cpp's KV cache already holds (their common prefix)."""
    same = 0
    for a, b in zip(llama._input_ids, tokens, strict=False):
        if int(a) != b:
            break
        same += 1
    return same


def synchronize(llama: Any) -> None:
    """Wait for llama.cpp's queued work, so it is done (and counted in its perf figures) now."""
    try:
        import llama_cpp

        llama_cpp.llama_synchronize(llama._ctx.ctx)
    except Exception:  # an optional call in llama.cpp builds
        pass


def eval_ahead(llama: Any, tokens: list[int], keep_going: Callable[[], bool] = lambda: True) -> int:
    """Put `tokens` in llama.cpp's KV cache, keeping the part it already holds; returns how
    many were evaluated. In pieces of PARTIAL_PIECE_TOKENS, stopping when `keep_going()` turns
    false. The caller holds the model's lock. A later `Llama.generate` reuses the longest
    common prefix, as it does between turns."""
    same = cached_prefix(llama, tokens)
    llama.n_tokens = same  # the next eval drops the cache after this point
    done = 0
    for i in range(same, len(tokens), PARTIAL_PIECE_TOKENS):
        if not keep_going():
            break
        piece = tokens[i:i + PARTIAL_PIECE_TOKENS]
        llama.eval(piece)
        done += len(piece)
    synchronize(llama)
    return done


def eval_ahead_soon(work: Callable[[], int], words: str) -> None:
    """Run `work` (a `prefill_partial`) in a worker thread, from the event loop; it is an
    optimisation, so a failure is logged and the turn evaluates its prompt itself."""

    def run() -> None:
        try:
            if n := work():
                logger.debug("evaluated %d tokens ahead for the words so far: %r", n, words)
        except Exception as e:
            logger.warning("evaluating the words so far failed: %s", e)

    asyncio.get_running_loop().run_in_executor(None, run)


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

        answer = None
        last_user = next((i for i in reversed(self._chat_ctx.items)
                          if i.type == "message" and i.role == "user"), None)
        if (self._llama_llm.options.skills and messages and messages[-1]["role"] == "user"
                and last_user is not None):
            answer = skills.answer((last_user.text_content or "").strip())
        if answer is not None:
            # A request a skill answers exactly needs no model: the answer is the reply.
            self._llama_llm.last_stats = GenerationStats(skill=answer.skill)
            # Word by word, as the model would stream it (TTS and transcription pace themselves on it).
            for piece in re.findall(r"\S+\s*", answer.text):
                self._event_ch.send_nowait(
                    llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
                )
            return

        def on_token(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def run() -> GenerationStats:
            try:
                tokens = self._llama_llm.prompt_tokens(messages)
                return self._llama_llm.generate(tokens, on_token, stop)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        fut = loop.run_in_executor(None, run)
        try:
            while (text := await queue.get()) is not None:
                self._event_ch.send_nowait(
                    llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=text))
                )
            stats = await fut
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    usage=llm.CompletionUsage(
                        completion_tokens=stats.completion_tokens,
                        prompt_tokens=stats.prompt_tokens,
                        prompt_cached_tokens=stats.reused_tokens,
                        total_tokens=stats.prompt_tokens + stats.completion_tokens,
                    ),
                )
            )
        finally:
            stop.set()  # interrupted or done: free the model for the next turn
