import sys

import pytest

from seatbelt.codec.requestbody import (
    MAX_DEPTH,
    MAX_REQUEST_BODY,
    BodyTooDeep,
    BodyTooLarge,
    UnreadableBody,
    dump_json,
    parse_json_object,
    too_deep,
)


def test_object_round_trips():
    body = parse_json_object(b'{"model": "m", "max_tokens": 5, "x": "\xc3\xa9"}')
    assert body == {"model": "m", "max_tokens": 5, "x": "é"}
    assert parse_json_object(dump_json(body)) == body


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1,2]", b'"s"', b'{"a":1,"a":2}', b'{"a": NaN}', b"\xff\xfe", b"[" * 100000],
)
def test_unreadable(data):
    with pytest.raises(UnreadableBody):
        parse_json_object(data)


def test_too_large():
    with pytest.raises(BodyTooLarge):
        parse_json_object(b" " * (MAX_REQUEST_BODY + 1))


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A body `depth` levels deep (the body object is level 1), alternating arrays and
    objects below it."""
    opens = [b"[" if i % 2 else b'{"a":' for i in range(depth - 1)]
    closes = [b"]" if i % 2 else b"}" for i in range(depth - 1)][::-1]
    return b'{"x":' + b"".join(opens) + inner + b"".join(closes) + b"}"


def test_a_body_at_the_depth_limit_is_read():
    body = parse_json_object(nested(MAX_DEPTH))
    assert "x" in body


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3_000, 200_000])
def test_a_body_deeper_than_the_limit_is_refused_naming_it(depth):
    """Past the limit, whatever CPython's own recursion limit (3.11 counts the caller's
    stack, 3.12+ has a fixed C limit): never a RecursionError."""
    with pytest.raises(BodyTooDeep, match=f"deeper than {MAX_DEPTH} levels"):
        parse_json_object(nested(depth))


def test_the_depth_limit_does_not_depend_on_the_callers_stack():
    """A caller with little recursion left (3.11 counts C recursion against it) still gets
    the documented answer, not a crash."""
    def at(depth: int) -> type[Exception] | None:
        if depth:
            return at(depth - 1)
        try:
            parse_json_object(nested(MAX_DEPTH + 1))
        except Exception as e:  # noqa: BLE001 - the type is the point
            return type(e)
        return None

    assert at(sys.getrecursionlimit() - 400) is BodyTooDeep


def test_brackets_in_strings_do_not_count_as_depth():
    text = b'"' + b"[" * (MAX_DEPTH * 4) + b'"'
    body = parse_json_object(b'{"messages":[{"content":' + text + b"}]}")
    assert body["messages"][0]["content"].startswith("[[[")


def test_many_shallow_containers_are_not_too_deep():
    parse_json_object(b'{"a":[' + b",".join([b"[{}]"] * 10_000) + b"]}")


def test_too_deep_is_iterative():
    value: list = []
    for _ in range(100_000):
        value = [value]
    assert too_deep(value, MAX_DEPTH)
    assert not too_deep([[]] * 1000, 2)
    assert too_deep([[[]]], 2)
