"""Flow comments lead with what fits mitmweb's narrow Comment column (about 15 characters)."""

from seatbelt.records import comment


def test_a_refusal_leads_with_its_code():
    text = comment.refused("insufficient_quota", "poor", "team", 120)
    assert text[:18] == "insufficient_quota"
    assert comment.detail(text) == ("seatbelt: refused insufficient_quota key=poor "
                                    "account=team reserved=120")


def test_a_finished_request_leads_with_its_key_and_tokens():
    text = comment.finished("alice", "team", 4120, settled=True, prompt=19, completion=238,
                            source="reported", overrun=False, outcome="served",
                            edits=["usage_requested"])
    assert text.startswith("alice 19+238 · ")
    assert comment.detail(text) == ("seatbelt: key=alice account=team reserved=4120 "
                                    "spent=19+238 (reported) edits=usage_requested")
    released = comment.finished("alice", "team", 50, settled=False, prompt=0, completion=0,
                                source="none", overrun=False, outcome="upstream_error",
                                edits=[])
    assert released.startswith("alice released · ")
    assert released.endswith("spent=0 (released) upstream_error")


def test_an_overrun_shows_in_the_lead_and_an_identity_in_the_detail():
    over = comment.finished("k", "a", 10, settled=True, prompt=9, completion=9,
                            source="reported", overrun=True, outcome="served", edits=[])
    assert over.startswith("k 9+9 overrun · ") and " overrun" in comment.detail(over)
    held = comment.admitted("k", "a", 77, "proxy_user")
    assert held.startswith("k held 77 · ") and held.endswith(" identity=proxy_user")
    assert comment.detail("no lead here") == "no lead here"
