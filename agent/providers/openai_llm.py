"""Cloud LLM: any OpenAI-compatible chat-completions endpoint (OpenAI, Groq, Ollama, vLLM,
a llama.cpp server) through livekit-plugins-openai, streamed."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2 as httpx
from livekit.plugins import openai

from ..settings import Settings


@dataclass(frozen=True)
class OpenAILLMOptions:
    api_key: str
    model: str = "gpt-4o-mini"
    base_url: str = ""  # empty: the plugin's default (api.openai.com)
    timeout: float = 5.0  # connect and between streamed chunks; a stall past it fails the turn over

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAILLMOptions:
        return cls(api_key=settings.openai_api_key.get_secret_value(), model=settings.openai_llm_model,
                   base_url=settings.openai_base_url, timeout=settings.fallback_timeout)


def openai_llm(opts: OpenAILLMOptions) -> openai.LLM:
    kwargs = {"base_url": opts.base_url} if opts.base_url else {}
    return openai.LLM(
        model=opts.model,
        api_key=opts.api_key,
        # The plugin's own default allows 15 s to connect; a caller should not wait that long.
        timeout=httpx.Timeout(connect=opts.timeout, read=opts.timeout, write=opts.timeout, pool=opts.timeout),
        max_retries=0,  # FallbackAdapter decides what happens next, not a hidden retry
        **kwargs,
    )
