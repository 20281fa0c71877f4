"""Live policy: the policy file is re-read when it changes, and on `seatbelt.reload`.

The runtime's background loop calls `PolicyWatch.poll` about once a second. A stat (mtime,
size, inode) that differs from the file last seen, or every `HASH_EVERY` ticks anyway (file
systems with coarse timestamps), leads to reading the bytes; only bytes whose SHA-256
differs are parsed. A good file replaces the running policy at once (requests already
admitted keep their holds; the ledger is never touched, so no spend is forgotten); a broken
one is refused with the loader's one-line error and the last good policy stays. Either way
one audit line is written:

    {"ts": ..., "outcome": "policy_reloaded" | "policy_rejected", "edits": [],
     every other contract field null,
     "policy_path": PATH, "policy_digest": 12 hex | null, "policy_keys": N | null,
     "trigger": "file_changed" | "command", "error": null | "one-line error"}

A rejected version is reported once, not every second; saving the fix reloads it. Writers
should replace the file atomically (write a temporary file, rename it over the policy):
a half-written file is rejected, and the complete one then loads on the next tick.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Literal

from seatbelt.config.policy import Policy, PolicyError, policy_from_text, read_policy_file
from seatbelt.records.audit import AUDIT_FIELDS, audit_record
from seatbelt.runtime import Runtime

logger = logging.getLogger("seatbelt")

HASH_EVERY = 10  # ticks: re-hash even when the stat looks unchanged
Trigger = Literal["file_changed", "command"]


@dataclass(frozen=True)
class Seen:
    """A version of the policy file: its stat and the SHA-256 of its bytes."""

    stat: tuple[int, int, int] | None
    sha256: str | None


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_policy(path: str, *, hashes_only: bool) -> tuple[Policy, Seen]:
    """Read once, hash and parse exactly those bytes; PolicyError on any problem."""
    stat = _stat(path)
    data, text = read_policy_file(path)
    seen = Seen(stat, hashlib.sha256(data).hexdigest())
    try:
        return policy_from_text(path, text, hashes_only=hashes_only), seen
    except PolicyError as e:
        e.seen = seen  # type: ignore[attr-defined]  # the version refused: reported once
        raise


class PolicyWatch:
    """What the running policy was read from; `poll` reloads when the file changes."""

    def __init__(self, path: str, seen: Seen) -> None:
        self.path = path
        self.seen = seen  # the last version loaded or rejected: never reported twice
        self.ticks = 0

    def poll(self, rt: Runtime) -> None:
        self.ticks += 1
        stat = _stat(self.path)
        if stat == self.seen.stat and self.ticks % HASH_EVERY:
            return
        try:
            with open(self.path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            digest = None  # gone or unreadable: say so once
        if digest == self.seen.sha256:
            self.seen = Seen(stat, digest)
            return
        reload(rt, "file_changed")


def install(rt: Runtime, path: str, seen: Seen) -> None:
    """After a (re)configure: watch this file, starting from the version just loaded."""
    rt.policy_watch = PolicyWatch(path, seen)


def reload(rt: Runtime, trigger: Trigger) -> tuple[bool, str]:
    """Re-read the policy now. (True, message) when swapped in; (False, one-line error)."""
    settings, running = rt.settings, rt.policy
    if settings is None or running is None:
        return False, "seatbelt is not configured; nothing to reload"
    path = settings.policy_path
    watch = rt.policy_watch
    try:
        policy, seen = read_policy(path, hashes_only=settings.hashes_only)
    except (PolicyError, ValueError, OSError) as e:
        error = " ".join(str(e).split())
        if watch is not None and watch.path == path:
            watch.seen = getattr(e, "seen", None) or Seen(_stat(path), None)
        message = (f"seatbelt: policy reload refused: {error}; the running policy "
                   f"({len(running.keys)} keys, digest {running.digest[:12]}) stays in force")
        logger.error(message)
        audit_event(rt, "policy_rejected", trigger, path, None, error)
        return False, message
    for warning in policy.warnings:
        logger.warning(f"seatbelt: {warning}")
    rt.policy = policy
    rt.mark_policy_changed()
    install(rt, path, seen)
    message = f"seatbelt: policy {path} reloaded ({len(policy.keys)} keys)"
    logger.info(f"{message}: digest {policy.digest[:12]}, {trigger.replace('_', ' ')}")
    audit_event(rt, "policy_reloaded", trigger, path, policy, None)
    return True, message


def audit_event(rt: Runtime, outcome: str, trigger: Trigger, path: str,
                policy: Policy | None, error: str | None) -> None:
    """One audit line per reload: the contract's fields (null where they do not apply),
    then what changed."""
    fields = {name: None for name in AUDIT_FIELDS if name not in ("ts", "edits")}
    record = audit_record(**{**fields, "outcome": outcome, "edits": []})
    record.update(
        policy_path=path,
        policy_digest=policy.digest[:12] if policy is not None else None,
        policy_keys=len(policy.keys) if policy is not None else None,
        trigger=trigger,
        error=error,
    )
    rt.audit.write(record)
