"""The flow comment: what a developer sees on each LLM flow in mitmweb's flow list.

mitmweb's Comment column shows about 15 characters, so each comment leads with what
matters at a glance — the refusal code, or the key and its tokens — then ` · ` and the
full detail (`seatbelt: key=... account=... reserved=... spent=...`), which the LLM view
and saved flows show whole.
"""

from __future__ import annotations

SEPARATOR = " · "


def detail(comment: str) -> str:
    """The `seatbelt: ...` detail of a comment (the whole comment if it has no lead)."""
    return comment.split(SEPARATOR, 1)[-1]


def admitted(key: str, account: str, reserved: int, identity: str | None) -> str:
    text = f"seatbelt: key={key} account={account} reserved={reserved}"
    if identity not in (None, "credential"):
        text += f" identity={identity}"
    return f"{key} held {reserved}{SEPARATOR}{text}"


def refused(code: str, key: str, account: str, reserved: int | None) -> str:
    text = f"seatbelt: refused {code} key={key} account={account}"
    if reserved is not None:
        text += f" reserved={reserved}"
    return f"{code} {key}{SEPARATOR}{text}"


def finished(key: str, account: str, reserved: int, *, settled: bool, prompt: int,
             completion: int, source: str, overrun: bool, outcome: str,
             edits: list[str]) -> str:
    spent = f"{prompt}+{completion} ({source})" if settled else "0 (released)"
    parts = [f"seatbelt: key={key} account={account} reserved={reserved}", f"spent={spent}"]
    if overrun:
        parts.append("overrun")
    if outcome != "served":
        parts.append(outcome)  # aborted / upstream_error
    if edits:
        parts.append("edits=" + ",".join(edits))
    lead = f"{key} {prompt}+{completion}" if settled else f"{key} released"
    if overrun:
        lead += " overrun"
    return lead + SEPARATOR + " ".join(parts)
