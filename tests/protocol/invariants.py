"""The invariants every explored run must keep (docs/concurrency.md states them too).

They are checked on what a run left: the responses each client got (``Result``), what the store
did and in which order (``Effect``), and what a request presenting each key sees afterwards
through each process (``Probe``). Values name the actor that wrote them, so a probe can tell
whose write it sees.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.protocol.checker import Effect, at_once
from tests.protocol.world import (
    ENDINGS,
    RENEWALS,
    USER,
    Result,
    World,
    envelope,
    state_of,
    tombstone,
)

INVARIANTS = {
    1: "An acknowledged write is visible to the next request of a holder of the current key,"
    " unless a purge or sign-out that committed ended the session (or it expired).",
    2: "After a purge, sign-out-everywhere or end-session is acknowledged, no key of that"
    " session or of its successors opens with its state, from any process, through any cache.",
    3: "A write by a request that loaded the key before a login renewal is in the renewed session"
    " only if it committed before the renewal's tombstone (a rotation's successor takes it"
    " within the grace).",
    4: "A renewal or rotation leaves the old session usable (failure reported to the client) or"
    " the new one usable with the state (success), never neither; no other response to that"
    " client sends a cookie that would replace the successor's; after a rotation's grace its old"
    " key opens nothing.",
    5: "At most one live successor per renewed or rotated key; after one listing, the user index"
    " lists no ended session.",
    6: "No 5xx but the opaque 503, no status but 200/409/503 (WebSocket: accept, or close 1011),"
    " and no exception escapes the middleware.",
}
_MISSING: Any = object()


def check(world: World) -> list[str]:
    """Every invariant broken by the run ``world`` holds the outcome of, as one line each."""
    facts = _Facts(world)
    problems: list[str] = []
    for number, rule in _RULES.items():
        problems.extend(f"invariant {number}: {text}" for text in rule(facts))
    return problems


class _Facts:
    """What the invariants ask of a run, computed once."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.results = list(world.results.values())
        self.effects = [e for e in world.run.effects if e.store == "db"]
        self.processes = range(world.scenario.processes)
        self.lineage: dict[str, str] = {id: name for name, (_, _, id) in world.seeds.items()}
        for effect in self.effects:  # a record that held a session's state belongs to it
            state = state_of(effect.data) if effect.op == "put" and effect.result else None
            if state is not None and "seed" in state:
                self.lineage.setdefault(effect.id, state["seed"])
        self.labels: dict[str, str] = {}
        for key in world.sealed:
            self.labels[key] = f"K{len(self.labels)}"

    def label(self, key: str | None) -> str:
        return "no key" if key is None else self.labels.get(key, "an unknown key")

    def of(self, name: str) -> list[Result]:
        """The actors that loaded session ``name``'s state."""
        return [r for r in self.results if r.loaded == name]

    def presenting(self, name: str) -> list[Result]:
        """The actors whose request carried session ``name``'s (first) key."""
        return [r for r in self.results if r.actor.session == name and r.actor.action != "end"]

    def ended(self, name: str) -> bool:
        """Whether an ending (purge, sign-out, end-session) committed on the session."""
        return any(
            e.op == "put"
            and e.result is not None
            and self.lineage.get(e.id) == name
            and tombstone(e.data) == (True, None)
            and self.world.results[e.actor].actor.action in ENDINGS
            for e in self.effects
            if e.actor in self.world.results
        )

    def expired(self, name: str) -> bool:
        """Whether the session expired: a live record of it reached its TTL (an ``expire``
        fault), or one of another session did and so the clock passed this one's expiry too
        (sessions seeded together expire together) with no write since to extend it."""
        if not any(e.op == "expire" and state_of(e.data) is not None for e in self.effects):
            return False
        now, db = self.world.stage.clock.now, self.world.stage.db.backing
        held = {hashlib.sha256(key.encode()).hexdigest() for key in self.world.sealed}
        for id, owner in self.lineage.items():  # a record no client holds a key to is no session
            record = at_once(db.get(id)) if owner == name and id in held else None
            stored = None if record is None else envelope(record.data)
            if stored is not None and stored.get("expires", now) > now:
                return False
        return True

    def excused(self, name: str) -> bool:
        return self.ended(name) or self.expired(name)

    def expired_key(self, key: str) -> bool:
        """Whether the session ``key`` names is past its expiry on the clock (which only an
        ``expire`` fault moves past a session's)."""
        if not any(e.op == "expire" and state_of(e.data) is not None for e in self.effects):
            return False
        record = at_once(self.world.stage.db.backing.get(hashlib.sha256(key.encode()).hexdigest()))
        stored = None if record is None else envelope(record.data)
        return stored is None or stored.get("expires", 0) <= self.world.stage.clock.now

    def ended_key(self, key: str) -> bool:
        """Whether an ending committed on the record ``key`` names (a session an actor made)."""
        id = hashlib.sha256(key.encode()).hexdigest()
        return any(
            e.op == "put"
            and e.id == id
            and e.result is not None
            and tombstone(e.data) == (True, None)
            and e.actor in self.world.results
            and self.world.results[e.actor].actor.action in ENDINGS
            for e in self.effects
        )

    def renewed_to(self, name: str) -> list[Result]:
        """The acknowledged renewals of the session (each got a new key)."""
        return [r for r in self.of(name) if r.actor.action in RENEWALS and r.acknowledged]

    def rotated_to(self, name: str) -> list[Result]:
        """In a rotation scenario, the acknowledged requests presenting the session's key that
        got another key back (they rotated it, or followed the rotation that won)."""
        if not self.world.scenario.rotation:
            return []
        return [
            r
            for r in self.presenting(name)
            if r.actor.action not in RENEWALS
            and r.acknowledged
            and r.cookie not in (None, "removal", r.presented)
        ]

    def successors(self, name: str) -> set[str]:
        """The new keys the session's clients were given (by a login, else by rotations)."""
        keys = {r.cookie for r in self.renewed_to(name)} or {
            r.cookie for r in self.rotated_to(name)
        }
        return {key for key in keys if key is not None}

    def rotation_committed(self, name: str) -> Effect | None:
        """The put that made the seeded record a rotation's tombstone, if one landed."""
        old_id = self.world.seeds[name][2]
        for e in self.effects:
            if e.op == "put" and e.id == old_id and e.result is not None and rotation(e.data):
                return e
        return None

    def current_key(self, name: str) -> str | None:
        keys = self.successors(name)
        if len(keys) > 1:
            return None  # invariant 5 reports it
        return keys.pop() if keys else self.world.seeds[name][0]

    def tombstone(self, renewal: Result) -> Effect | None:
        """The renewal's put that made the old record its tombstone, if it landed."""
        old_id = self.world.seeds[renewal.actor.session][2]
        for e in self.effects:
            if (
                e.actor == renewal.actor.name
                and e.op == "put"
                and e.id == old_id
                and e.result is not None
                and tombstone(e.data)[1]
            ):
                return e
        return None

    def committed_before(self, actor: str, id: str, seq: int) -> bool:
        """Whether ``actor`` wrote (or touched) record ``id`` before effect ``seq``."""
        return any(
            e.actor == actor
            and e.id == id
            and e.op in ("put", "touch")
            and e.result
            and e.seq < seq
            for e in self.effects
        )

    def seen(self, key: str, process: int) -> dict[str, Any]:
        return self.world.probes[key, process].state

    def landed(self, actor: str, key: str, value: Any, id: str | None = None) -> list[Effect]:
        """The puts by ``actor`` that stored ``key = value`` (on record ``id``), in order."""
        return [
            e
            for e in self.effects
            if e.actor == actor
            and e.op == "put"
            and e.result is not None
            and (id is None or e.id == id)
            and (state_of(e.data) or {}).get(key, _MISSING) == value
        ]


def _acknowledged_writes(facts: _Facts) -> list[str]:
    out = []
    for writer in facts.results:
        if not (writer.acknowledged and writer.wrote):
            continue
        name = writer.loaded
        if writer.cookie not in (None, "removal", writer.presented):
            current: str | None = writer.cookie  # it started a session of its own
        elif name is not None:
            current = facts.current_key(name)
        else:
            out.append(
                f"{writer.actor.name}'s acknowledged write {writer.wrote} is stored under no key"
                " its client holds"
            )
            continue
        if current is None or (name is not None and facts.excused(name)):
            continue
        if facts.ended_key(current) or facts.expired_key(current):
            continue
        for key, value in writer.wrote.items():
            if writer.actor.action == "update_or":
                continue  # counted by _counted_updates
            since = facts.landed(writer.actor.name, key, value)
            after = since[-1].seq if since else -1
            later = {  # a later write of the same key (last writer wins)
                json.dumps(other.wrote[key])
                for other in facts.results
                if key in other.wrote
                and any(
                    e.seq > after for e in facts.landed(other.actor.name, key, other.wrote[key])
                )
            }
            for process in facts.processes:
                seen = facts.seen(current, process).get(key, _MISSING)
                if seen == value or (seen is not _MISSING and json.dumps(seen) in later):
                    continue
                shown = "nothing" if seen is _MISSING else repr(seen)
                out.append(
                    f"{writer.actor.name}'s acknowledged {key}={value!r} is not seen with"
                    f" the current key {facts.label(current)} through process {process}"
                    f" (it sees {shown})"
                )
    return out


def _counted_updates(facts: _Facts) -> list[str]:
    """``update_or`` is a read-modify-write merged into the stored value, so concurrent
    increments all count: the counter is the number of requests whose increment was stored
    (each once), and at least the number acknowledged."""
    out = []
    for name, (key, _, _) in facts.world.seeds.items():
        counters = [r for r in facts.of(name) if r.actor.action == "update_or"]
        if not counters or facts.excused(name) or facts.current_key(name) != key:
            continue
        stored = [
            r
            for r in counters
            if any(
                e.actor == r.actor.name
                and e.op == "put"
                and e.result is not None
                and "n" in (state_of(e.data) or {})
                for e in facts.effects
            )
        ]
        acknowledged = [r for r in counters if r.acknowledged]
        for process in facts.processes:
            seen = facts.seen(key, process).get("n", 0)
            if seen != len(stored) or seen < len(acknowledged):
                out.append(
                    f"{len(stored)} increments were stored ({len(acknowledged)} acknowledged),"
                    f" but the counter reads {seen} through process {process}"
                )
    return out


def _ended_stays_ended(facts: _Facts) -> list[str]:
    out = []
    for result in facts.results:
        action = result.actor.action
        if action not in ENDINGS or not result.acknowledged:
            continue
        if action == "signout":
            names = [s.name for s in facts.world.scenario.seeds if s.user == USER]
        else:
            names = [result.actor.session]
        for name in names:
            for key in facts.world.sealed:
                for process in facts.processes:
                    if facts.seen(key, process).get("seed") == name:
                        out.append(
                            f"{result.actor.name}'s {action} was acknowledged, yet"
                            f" {facts.label(key)} opens session {name}'s state through"
                            f" process {process}"
                        )
    return out


def _pre_renewal_writes(facts: _Facts) -> list[str]:
    out = []
    for name, (_, _, old_id) in facts.world.seeds.items():
        for renewal in facts.renewed_to(name):
            new_key = renewal.cookie
            assert new_key is not None
            buried = facts.tombstone(renewal)
            if buried is None:
                out.append(
                    f"{renewal.actor.name}'s renewal was acknowledged, but the old record was"
                    " never made its tombstone (the old key stays usable)"
                )
                continue
            tombstone = buried.seq
            for writer in facts.of(name):
                if writer is renewal:
                    continue
                for key, value in writer.wrote.items():
                    visible = any(
                        facts.seen(new_key, p).get(key, _MISSING) == value for p in facts.processes
                    )
                    before = [
                        e
                        for e in facts.landed(writer.actor.name, key, value, old_id)
                        if e.seq < tombstone
                    ]
                    if visible and not before:
                        out.append(
                            f"{writer.actor.name} loaded the pre-renewal key and its {key}="
                            f"{value!r} is in the renewed session {facts.label(new_key)}, but it"
                            " did not commit before the renewal's tombstone"
                        )
    return out


def _renewal_all_or_nothing(facts: _Facts) -> list[str]:
    out = []
    for name, (old_key, _, _) in facts.world.seeds.items():
        if facts.excused(name):
            continue
        renewals = [r for r in facts.of(name) if r.actor.action in RENEWALS]
        succeeded = facts.renewed_to(name)
        for renewal in renewals:
            if renewal.acknowledged:
                new_key = renewal.cookie
                assert new_key is not None
                for process in facts.processes:
                    probe = facts.world.probes[new_key, process]
                    missing = [k for k, v in renewal.wrote.items() if probe.state.get(k) != v]
                    if probe.state.get("seed") != name or missing:
                        out.append(
                            f"{renewal.actor.name}'s renewal succeeded, but its new key"
                            f" {facts.label(new_key)} opens {_show(probe.state)} through"
                            f" process {process}"
                        )
                    if renewal.actor.action == "login" and probe.user != USER:
                        out.append(
                            f"{renewal.actor.name}'s login succeeded, but {facts.label(new_key)}"
                            f" is bound to {probe.user!r}"
                        )
                buried = facts.tombstone(renewal)
                old_id = facts.world.seeds[name][2]
                for other in facts.presenting(name):
                    if other is renewal or other.cookie in (None, new_key):
                        continue
                    if other.cookie == old_key and (  # the old key sent again
                        other.head < renewal.head
                        or buried is None
                        or facts.committed_before(other.actor.name, old_id, buried.seq)
                    ):
                        continue  # before the new one, or by a request the renewal carried
                    what = {"removal": "removes the cookie", old_key: "sends the old key again"}
                    out.append(
                        f"{other.actor.name} presented the renewed key and its response"
                        f" {what.get(other.cookie, f'sends another key ({facts.label(other.cookie)})')},"
                        f" which would replace {renewal.actor.name}'s {facts.label(new_key)}"
                    )
            elif not succeeded:
                for process in facts.processes:
                    state = facts.seen(old_key, process)
                    if state.get("seed") != name:
                        out.append(
                            f"{renewal.actor.name}'s renewal failed ({_outcome(renewal)}), and"
                            f" the old key {facts.label(old_key)} opens {_show(state)} through"
                            f" process {process}: neither session is usable"
                        )
    return out


def _rotated_keys(facts: _Facts) -> list[str]:
    """Rotation scenarios: the session stays usable under its current key (unless it was
    ended), and once the grace is over the rotated-away key opens nothing (while a key no
    rotation retired still opens the session)."""
    out: list[str] = []
    if not facts.world.scenario.rotation:
        return out
    for name, (old_key, _, _) in facts.world.seeds.items():
        if facts.excused(name):
            continue
        current = facts.current_key(name)
        rotated = facts.rotation_committed(name)
        given = facts.rotated_to(name)
        first = min((r.head for r in given), default=None)
        for other in facts.presenting(name) if rotated is not None and first is not None else ():
            if other.cookie in (None, current) or other in given:
                continue
            if other.cookie == old_key and (
                other.head < first or facts.committed_before(other.actor.name, *_at(rotated))
            ):
                continue  # sent before the new key, or by a write the rotation carried
            out.append(
                f"{other.actor.name} presented the rotated key {facts.label(old_key)} and its"
                f" response sends {facts.label(other.cookie) if other.cookie != 'removal' else 'a removal'},"
                f" which would replace the rotated key {facts.label(current)}"
            )
        for process in facts.processes:
            if current is not None and facts.seen(current, process).get("seed") != name:
                out.append(
                    f"the current key {facts.label(current)} of session {name} opens"
                    f" {_show(facts.seen(current, process))} through process {process}:"
                    " neither key is usable"
                )
            after = facts.world.after_grace[old_key, process].state
            if rotated and after:
                out.append(
                    f"after the rotation's grace the old key {facts.label(old_key)} still opens"
                    f" {_show(after)} through process {process}"
                )
            if not rotated and after.get("seed") != name:
                out.append(
                    f"no rotation committed, yet after its grace the old key"
                    f" {facts.label(old_key)} opens {_show(after)} through process {process}"
                )
    return out


def _one_successor(facts: _Facts) -> list[str]:
    out = []
    for name in facts.world.seeds:
        live = [
            key
            for key in sorted(
                {r.cookie for r in facts.renewed_to(name) + facts.rotated_to(name) if r.cookie}
            )
            if any(facts.seen(key, p).get("seed") == name for p in facts.processes)
        ]
        if len(live) > 1:
            shown = ", ".join(facts.label(k) for k in live)
            out.append(f"session {name} has {len(live)} live successors: {shown}")
    return out + facts.world.index_problems


def _no_errors(facts: _Facts) -> list[str]:
    out = []
    for result in facts.results:
        name, action = result.actor.name, result.actor.action
        if result.error is not None:
            if action in ("signout", "end") and result.error.startswith("StoreError"):
                continue  # an admin call reports a store failure by raising it
            out.append(f"{name}: an exception escaped: {result.error}")
            continue
        if action in ("signout", "end"):
            continue
        if action in ("ws", "ws_late"):
            if result.status not in (101, None) or result.closed not in (1000, 1011):
                out.append(f"{name}: the WebSocket ended with {result.status}/{result.closed}")
            continue
        if result.status not in (200, 409, 503):
            out.append(f"{name}: status {result.status}")
        elif result.status != 200 and result.body:
            out.append(f"{name}: the {result.status} is not opaque ({result.body[:40]!r})")
    return out


_RULES = {
    1: lambda facts: _acknowledged_writes(facts) + _counted_updates(facts),
    2: _ended_stays_ended,
    3: _pre_renewal_writes,
    4: lambda facts: _renewal_all_or_nothing(facts) + _rotated_keys(facts),
    5: _one_successor,
    6: _no_errors,
}


def _at(effect: Effect) -> tuple[str, int]:
    return effect.id, effect.seq


def rotation(data: bytes | None) -> bool:
    """Whether ``data`` is a rotation's tombstone (the checker's own reading)."""
    found = tombstone(data)
    return found[0] and found[1] is not None and b'"rotated":' in (data or b"")


def _outcome(result: Result) -> str:
    if result.error is not None:
        return result.error
    cookie = {None: "no cookie", "removal": "cookie removed"}.get(result.cookie, "a new key")
    return f"{result.status}, {cookie}"


def _show(state: dict[str, Any]) -> str:
    return "an empty session" if not state else f"state {sorted(state)}"
