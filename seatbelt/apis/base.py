"""The framework every API family module plugs into.

One module per family (openai.py, anthropic.py, ...) defines one `ApiFamily` subclass;
it knows everything family-specific: which flows are its own, where the credential
is, the model / output limit / n of a request, how its responses are framed, which
frames carry usage and how to read them, and its error shape. Everything generic
(decoding, frame cutting, bounded buffering, estimation) lives outside the families;
how a family's frames read in the content view is its `assemble`.
Adding an API = adding one module and listing it in `apis/__init__.py`.
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping

from seatbelt.codec.framing import error_of, error_text

if TYPE_CHECKING:
    from seatbelt.apis.assembly import Assembly

Framing = Literal["sse", "ndjson", "json", "json-array"]
# refused: the path's readings route differently (seatbelt/apis/paths.py): 400, never sent
EndpointKind = Literal["metered", "free", "unmetered", "refused"]


class BadRequestBody(ValueError):
    """The request body on an LLM route cannot be read unambiguously (-> 400)."""


class UnmeteredRequest(BadRequestBody):
    """A request on a metered route whose cost seatbelt cannot see (a `background: true`
    response): the gate answers it as an `unmetered` endpoint (contract §4). It is a
    BadRequestBody so that any caller unaware of it still refuses (400): never forwarded
    unmetered by accident."""


@dataclass(frozen=True)
class Route:
    """Which API a request belongs to. Routing is by shape (method + path), never by host."""

    family: "ApiFamily"
    provider: str  # metrics label: openai | azure | anthropic | gemini | ollama
    endpoint: str  # chat | completions | embeddings | messages | ... (audit/debug only)
    kind: EndpointKind  # metered: reserve/settle; free: pass; unmetered: 403 unless allowed
    model_from_path: str | None = None  # Azure deployment, Gemini model


@dataclass(frozen=True)
class RequestFacts:
    """What the reservation needs from a request body (pure data, no I/O)."""

    model: str | None
    stream: bool
    max_output: int | None  # the limit the request itself names; None if none
    multiplier: int = 1  # n / max(n, best_of) / candidateCount
    produces_output: bool = True  # False for embeddings
    wants_usage: bool = False  # OpenAI-style stream: the client itself asked for usage
    # The field that refers to server-side state the request does not carry (a stored
    # conversation, a cache): its prompt is bounded by the model's context window.
    hidden_context: str | None = None
    # The model may reason out of sight (tokens billed as output that no frame shows): a
    # stream left before its usage frame is charged its hold (docs/metering.md).
    hidden_reasoning: bool = False


@dataclass
class Usage:
    """Token counts as the upstream reported them, normalised to the contract's meaning.

    prompt_tokens counts every input token processed (cache reads and writes included);
    completion_tokens every output token (reasoning included). None = not reported.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def complete(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None

    @property
    def total(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


class UsageReader(abc.ABC):
    """Per-response state: fed the parsed JSON of each frame that may carry usage."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.invalid: str | None = None  # set when a usage value was absurd (flagged, ignored)

    @abc.abstractmethod
    def feed(self, obj: Any) -> None:
        """Take one parsed frame (or the whole body for JSON). Replace, never sum."""


def count(value: Any) -> int | None:
    """A usage number as the contract accepts it: a non-negative int below 2**53, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < 0 or value >= 2**53:
        return None
    return value


@dataclass(frozen=True)
class ErrorShape:
    """How a refusal is spelled on one family's routes."""

    status: int
    code: str  # contract code: insufficient_quota, rate_limit_exceeded, invalid_api_key, ...
    message: str
    retry_after: int | None = None  # seconds, also sent as the Retry-After header


describe_error = error_text  # one spelling of an upstream error: seatbelt/codec/framing.py


class ApiFamily(abc.ABC):
    """One LLM API family. Instances are stateless and shared by all flows."""

    name: str = ""  # module name, e.g. "openai"
    # Header names (lowercase) whose value is the credential, in the places this family's
    # upstream honours. "authorization" is read as "Bearer X".
    credential_headers: tuple[str, ...] = ("authorization",)
    credential_query: tuple[str, ...] = ()
    # Raw-frame substrings that a frame must contain to be worth JSON-parsing for usage.
    usage_markers: tuple[bytes, ...] = (b'"usage"',)
    # Captures the string values that are generated output text, for the estimate.
    output_text: re.Pattern[bytes] = re.compile(rb'"(?:content|text)"\s*:\s*"((?:[^"\\]|\\.)*)"')
    # The output text of a response read whole, where it differs from a stream's deltas
    # (Responses repeats its output in summary events); None: output_text.
    document_text: re.Pattern[bytes] | None = None

    # Prompt tokens the upstream adds that no byte of the body shows (prompt_overhead):
    # a fixed part, per message (role and framing tokens of the chat template), per tool
    # definition (its rendering), and a hidden system prompt when any tool is present.
    # Generous on purpose: each family's module says where its numbers come from.
    message_keys: tuple[str, ...] = ("messages",)
    base_tokens: int = 16
    per_message: int = 8
    per_tool: int = 32
    tools_prompt: int = 64

    @abc.abstractmethod
    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        """Return a Route when this request is one of this family's endpoints."""

    @abc.abstractmethod
    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        """Read model, stream, limit and n; raise BadRequestBody for a bad limit."""

    @abc.abstractmethod
    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        """Name `limit` as the output limit of a request that named none (mutates body)."""

    def prompt_overhead(self, route: Route, body: dict[str, Any]) -> int:
        """Fixed prompt tokens beyond the body's text (seatbelt/admission/estimate.py adds
        them to the text bound)."""
        messages = sum(_length(body.get(k)) for k in self.message_keys)
        tools = self.tool_count(body)
        return (self.base_tokens + self.per_message * messages + self.per_tool * tools
                + (self.tools_prompt if tools else 0))

    # Context windows by model-name prefix, longest first wins: the default a request with
    # hidden context reserves when the policy's `models: {M: {context_window: N}}` names none.
    context_windows: tuple[tuple[str, int], ...] = ()

    def context_window(self, model: str | None) -> int | None:
        """This family's documented window for a model, or None when it is not known."""
        if model is None:
            return None
        found = [(len(p), n) for p, n in self.context_windows if model.startswith(p)]
        return max(found)[1] if found else None

    def tool_count(self, body: dict[str, Any]) -> int:
        """How many tool definitions the request declares."""
        return _length(body.get("tools")) + _length(body.get("functions"))

    def request_usage(self, route: Route, body: dict[str, Any]) -> bool:
        """Ask a stream for a usage frame the client did not ask for. True if body changed."""
        return False

    def is_injected_usage_frame(self, obj: Any) -> bool:
        """True for the usage-only frame that exists only because request_usage() asked."""
        return False

    @abc.abstractmethod
    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        """How the response body is cut into frames."""

    @abc.abstractmethod
    def new_usage_reader(self, route: Route) -> UsageReader:
        """Fresh per-response usage state."""

    @abc.abstractmethod
    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        """The refusal body in this family's own error shape."""

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """Content view: add one parsed frame of this family's responses to `a` and return
        True, or False when the frame is not in this family's shape (the next one tries)."""
        return False

    def hides_reasoning(self, model: str | None, body: dict[str, Any]) -> bool:
        """Can this request's model spend output tokens on reasoning no frame shows? Read by
        each family's parse_request into RequestFacts.hidden_reasoning."""
        return False

    def stream_error(self, framing: Framing, error: ErrorShape) -> bytes:
        """One frame, in this family's stream, that its SDKs raise as an error: how a stream
        that outran its hold ends (seatbelt/metering/scanner.py). Starts at a frame boundary."""
        data = json.dumps(self.error_body(error), separators=(",", ":")).encode()
        if framing == "sse":
            return b"data: " + data + b"\n\n"
        if framing == "json-array":
            return data + b"]"  # the element closes the array: the body ends with it
        return data + b"\n"

    def read_error(self, obj: Any) -> str | None:
        """An upstream error in this family's shape (a whole body, an array element or one
        frame), as seatbelt/codec/framing.py spells it; None if `obj` is not one. The default
        reads every shape the built-in families send (`codec.framing.error_of`)."""
        return error_of(obj)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


@dataclass
class Credentials:
    """What authentication found: zero or one credential, or a reason it is unusable."""

    value: str | None = None
    error: str | None = None  # two different credentials, folded duplicate, unparseable
    places: list[str] = field(default_factory=list)
