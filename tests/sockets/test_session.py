"""Which open response a server event belongs to (seatbelt/sockets/session.py)."""

from __future__ import annotations

from typing import Any

from seatbelt.sockets.events import Kind
from seatbelt.sockets.session import Pending, Session
from tests.sockets.test_settle import pending


def session(*open_: Pending) -> Session:
    s = Session(flow=Any, kind=Kind.REALTIME, route=Any, policy=Any,  # type: ignore[arg-type]
                key=None, ops=None, fingerprint=None, identity=None, model=None)
    s.pending.extend(open_)
    return s


def test_an_error_ends_the_create_it_names_and_no_other() -> None:
    a, b = pending(event_id="ev_a"), pending(event_id="ev_b")
    s = session(a, b)
    assert s.failed("ev_b") is b
    assert s.failed("ev_other") is None  # about another client event: no response ends
    assert s.failed(None) is a  # unnamed (Responses mode): the oldest not begun
    a.created = True
    assert s.failed("ev_a") is None  # already begun: its response.done settles it


def test_announcements_and_ends_find_their_response() -> None:
    a, b = pending(), pending()
    s = session(a, b)
    assert s.announce("r1") is a and a.response_id == "r1"
    assert s.current() is a
    assert s.announce("r2") is b and s.current() is b
    assert s.find("r1") is a and s.find("r2") is b
    assert s.find(None) is a and s.announce("r3") is None  # r3: the server began it alone
