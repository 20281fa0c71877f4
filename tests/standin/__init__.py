"""A stand-in LLM API for end-to-end tests and the offline demo (see `server`)."""

from __future__ import annotations

from tests.standin.server import Received, StandIn, prompt_tokens_for

__all__ = ["Received", "StandIn", "prompt_tokens_for"]
