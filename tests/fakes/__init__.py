"""Local fake servers speaking the wire protocols of the cloud providers Parley supports.

No cloud is reachable from the test machines, so each provider's protocol is served on
127.0.0.1 by a small aiohttp app running in its own thread (the worker under test is a
separate process; parley-call blocks the test thread): `OpenAIFake` (chat completions SSE
with tool calls, /v1/audio/speech), `DeepgramFake` (/v1/listen live websocket) and
`RealtimeFake` (the OpenAI Realtime websocket as livekit-plugins-openai 1.8.9 speaks it).
Each records what it was sent, so tests can check that our configuration reached it, and
can fail on demand the ways a cloud provider does.
"""

from .base import Failure, closed_port
from .deepgram import DeepgramFake
from .openai import OpenAIFake, Reply
from .realtime import RealtimeFake

__all__ = ["DeepgramFake", "Failure", "OpenAIFake", "RealtimeFake", "Reply", "closed_port"]
