"""What the content view (seatbelt/ui/contentview.py) builds from a response's frames.

Each family module knows how its own frames become readable text (`ApiFamily.assemble`);
they all write into one `Assembly`, so the view stays generic and a new family brings its
own reading with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Part:
    kind: str  # text | reasoning | refusal | tool
    content: str = ""
    name: str = ""  # tool name
    call_id: str = ""


@dataclass
class Choice:
    index: int
    parts: list[Part] = field(default_factory=list)
    finish: str | None = None
    _tools: dict[str, Part] = field(default_factory=dict)

    def add(self, kind: str, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        if self.parts and self.parts[-1].kind == kind:
            self.parts[-1].content += text
        else:
            self.parts.append(Part(kind, text))

    def tool(self, key: Any, name: Any = None, call_id: Any = None) -> Part:
        key = repr(key)  # ids and indexes come from the wire: maybe lists, never trusted
        part = self._tools.get(key)
        if part is None:
            part = self._tools[key] = Part("tool")
            self.parts.append(part)
        if isinstance(name, str) and name:
            part.name = name
        if isinstance(call_id, str) and call_id:
            part.call_id = call_id
        return part


@dataclass
class Summary:
    """What one LLM response body says, assembled from all its frames."""

    api: str
    framing: str  # sse | ndjson | json
    frames: int = 0
    model: str | None = None
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unparsed: int = 0
    embeddings: tuple[int, int] | None = None  # (vectors, dimensions)
    cut: str | None = None

    def choice(self, index: Any = 0) -> Choice:
        i = index if isinstance(index, int) else 0
        if i not in self.choices:
            self.choices[i] = Choice(i)
        return self.choices[i]

    def add_error(self, text: str) -> None:
        """One line per distinct error: a Responses stream reports one twice (error event,
        then response.failed)."""
        if text not in self.errors:
            self.errors.append(text)

    def output_text(self) -> str:
        """Every generated piece (text, reasoning, tool arguments) in order."""
        return "".join(p.content for c in self.choices.values() for p in c.parts)


class Assembly:
    """One response's assembly in progress: the Summary, and what frames refer back to."""

    def __init__(self, summary: Summary) -> None:
        self.s = summary
        self.blocks: dict[str, Part] = {}  # repr(anthropic content block index) -> part
        self.items: dict[str, Part] = {}  # repr(responses API item id) -> tool part

    def api(self, name: str) -> None:
        """The first specific name wins; the generic "openai" (a usage-only or empty-choices
        chunk) gives way to the chat/completions name a later frame reveals."""
        if not self.s.api or (self.s.api == "openai" and name != "openai"):
            self.s.api = name

    def model(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.s.model = value

    def usage(self, value: Any, merge: bool = False) -> None:
        if isinstance(value, dict) and value:
            if merge:
                self.s.usage.update({k: v for k, v in value.items() if v is not None})
            else:
                self.s.usage = dict(value)
