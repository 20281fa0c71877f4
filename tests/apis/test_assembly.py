"""The assembly every family writes its frames into (seatbelt/apis/assembly.py): pieces of
one kind join, tools are found again by their wire key, wire values are never trusted. What
each family writes is in its own test module; the whole view in tests/ui/test_contentview.py."""

from __future__ import annotations

from seatbelt.apis.assembly import Assembly, Choice, Part, Summary


def test_pieces_of_one_kind_join_and_a_new_kind_starts_a_part() -> None:
    c = Choice(0)
    for kind, text in (("reasoning", "Think"), ("reasoning", "ing."), ("text", "Hi"),
                       ("text", ""), ("text", None), ("text", 7), ("text", "!")):
        c.add(kind, text)
    assert c.parts == [Part("reasoning", "Thinking."), Part("text", "Hi!")]


def test_a_tool_is_found_again_by_its_key_whatever_the_key_is() -> None:
    c = Choice(0)
    first = c.tool(0, name="lookup", call_id="call_1")
    first.content += '{"q":'
    again = c.tool(0, name="", call_id=None)  # a later delta names nothing: kept
    again.content += "2}"
    listed = c.tool(["odd", "key"])  # a list from the wire: still a key, never a crash
    assert again is first and listed is not first
    assert (first.name, first.call_id, first.content) == ("lookup", "call_1", '{"q":2}')
    assert [p.kind for p in c.parts] == ["tool", "tool"]


def test_choices_by_index_and_an_odd_index_is_choice_zero() -> None:
    s = Summary("openai.chat", "sse")
    s.choice(1).add("text", "b")
    s.choice("x").add("text", "a")
    s.choice(None).add("text", "a")
    assert sorted(s.choices) == [0, 1] and s.output_text() == "baa"  # in order of arrival


def test_an_error_said_twice_is_one_line() -> None:
    s = Summary("responses", "sse")
    for text in ("server_error: boom", "server_error: boom", "rate_limit: slow"):
        s.add_error(text)
    assert s.errors == ["server_error: boom", "rate_limit: slow"]


def test_the_generic_api_name_gives_way_to_a_specific_one_and_the_first_specific_wins() -> None:
    a = Assembly(Summary("", "sse"))
    a.api("openai")
    a.api("openai.chat")
    a.api("openai.completions")
    assert a.s.api == "openai.chat"


def test_model_and_usage_take_only_real_values_and_usage_merges_when_asked() -> None:
    a = Assembly(Summary("anthropic", "sse"))
    a.model("")
    a.model(None)
    a.model("claude-x")
    a.usage({"input_tokens": 10, "output_tokens": 1})
    a.usage({"output_tokens": 30, "input_tokens": None}, merge=True)  # Anthropic's delta
    a.usage([])  # not a dict: ignored
    a.usage({})
    assert a.s.model == "claude-x"
    assert a.s.usage == {"input_tokens": 10, "output_tokens": 30}
    a.usage({"prompt_tokens": 5})  # not merged: replaced
    assert a.s.usage == {"prompt_tokens": 5}
