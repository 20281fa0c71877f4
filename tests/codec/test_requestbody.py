import pytest

from seatbelt.codec.requestbody import (
    MAX_REQUEST_BODY,
    BodyTooLarge,
    UnreadableBody,
    dump_json,
    parse_json_object,
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
