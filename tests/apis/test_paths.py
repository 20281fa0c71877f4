"""The readings of one request-target (seatbelt/apis/paths.py): what each kind of server
may route it as. How the router uses them is tests/apis/test_routing.py."""

from __future__ import annotations

import pytest

from seatbelt.apis.paths import is_plain, readings


def test_readings_of_a_plain_path_are_one() -> None:
    assert is_plain("/v1/chat/completions?x=%2F") and readings("/a/b") == ("/a/b",)
    assert not is_plain("/v1/chat/completions#x") and not is_plain("/v1/./x")
    assert set(readings("/a\\b;p#f")) == {"/a\\b;p", "/a\\b;p#f", "/a/b;p", "/a/b"}


@pytest.mark.parametrize("target,expected", [
    ("/v1/chat/completions?stream=1#x", ("/v1/chat/completions", "/v1/chat/completions")),
    ("/a#f?q", ("/a", "/a#f")),  # the query after a fragment is the fragment's
    ("/a;x=1/b;y", ("/a;x=1/b;y", "/a/b")),
    ("\\a\\b", ("\\a\\b", "/a/b")),
])
def test_each_server_reading_is_there_once(target: str, expected: tuple[str, ...]) -> None:
    assert set(readings(target)) == set(expected)
    assert len(readings(target)) == len(set(expected))
    assert readings(target)[0] == expected[0]  # the fragment-dropping reading comes first


@pytest.mark.parametrize("target", ["/v1//chat", "/v1/../x", "/v1/%2e%2e/x", "/a;b", "/a\\b",
                                    "/a#b", "/."])
def test_anything_a_server_might_read_differently_is_not_plain(target: str) -> None:
    assert not is_plain(target)


def test_odd_characters_in_the_query_do_not_make_a_path_odd() -> None:
    assert is_plain("/v1/chat/completions?a=%2F&b=..//;")
    assert is_plain("/v1/models/gpt-4.1")  # a dot inside a segment is no dot segment
