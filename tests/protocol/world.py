"""The world a scenario runs in: processes (real ``SessionMiddleware`` instances sharing one
record store, optionally through ``CachedSessionStore``), seeded sessions, actors, and the
probes that look at the outcome.

An actor is one request (HTTP or WebSocket, hand-made ASGI scope and messages) against a tiny
raw-ASGI app that uses only the public ``Session`` API, or one admin call. Every value an
actor writes names the actor, so the invariants can tell whose write they see.

A ``Stage`` (the stores' wrappers, the middlewares, the seeded records) is built once per
exploration; each run gets a ``World``: fresh records restored from the seed, a fresh ``Run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from sessionware import (
    BrowserSession,
    Key,
    PersistentSession,
    SessionAdmin,
    SessionError,
    SessionMiddleware,
    TtlExtensionPolicy,
)
from sessionware.crypto import ContentSecurity, unseal
from sessionware.repository import Repository
from sessionware.stores import MemorySessionStore, RecordStore
from sessionware.stores.base import ABSENT, TOMBSTONE_TTL
from sessionware.stores.cached import CachedSessionStore
from tests.protocol.checker import (
    ACTOR,
    CheckerLoop,
    Clock,
    Run,
    ScheduledIndexedStore,
    ScheduledStore,
    at_once,
)

USER = "u"
"""The user the logged-in sessions are bound to."""
T0 = 1_700_000_000.0
KEY = Key.generate()
COOKIE = "id"

ROTATE_EVERY = timedelta(minutes=15)
ROTATION_GRACE = timedelta(seconds=30)
"""A rotation scenario's settings: its seeded keys are due when the actors start."""
ADMIN_ACTIONS = frozenset({"signout", "end"})
RENEWALS = frozenset({"login", "renew"})
ENDINGS = frozenset({"purge", "signout", "end"})
"""Actions that end a session: a tombstone with no successor they land is a committed end."""
LATE = frozenset({"stream", "ws", "ws_late"})
"""Actions that write after the response head (or the WebSocket's accept)."""


@dataclass(frozen=True)
class Seed:
    """A session that exists before the actors start: ``{"seed": name, "cart": ["s"]}``."""

    name: str
    user: str | None = None


@dataclass(frozen=True)
class Actor:
    """One concurrent request (or admin call).

    ``action``: write (``session["w_<name>"] = name``), nested (appends ``name`` to the
    ``cart`` list in place), update_or (``update_or("n", 1, n + 1)``), login (writes, then
    ``bind_user`` + ``renew``), renew, purge, read (touches under a touch lifecycle), stream
    (writes after the response head), ws (a WebSocket that writes after accept), ws_late (one
    that writes after more than the tombstone TTL), rotate (a request that only reads: in a
    rotation scenario, where every request is due to rotate, that is all it does), signout
    (sign-out-everywhere of ``USER``),
    end (end one session by its id). ``session``: the seeded session whose cookie it presents;
    ``process``: which middleware serves it.
    """

    name: str
    action: str
    session: str = "L"
    process: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    actors: tuple[Actor, ...]
    seeds: tuple[Seed, ...] = (Seed("L"),)
    processes: int = 1
    cached: bool = False
    lifecycle: str = "browser"
    """``browser``; ``touch`` (extended on every request: ``store.touch``); ``touch_after``
    (extended by a rewrite once due; the clock is moved so that it is due)."""
    faults: int = 1
    sampled: int = 0
    """0: explore exhaustively; n: draw n seeded random schedules instead."""
    rotation: bool = False
    """Whether the middlewares rotate keys (``ROTATE_EVERY``): the seeded keys are due, so
    every request presenting one rotates it, or follows the rotation that won."""
    late: tuple[int, ...] = ()
    """In a rotation scenario, the processes whose requests stand for ones that loaded the key
    just before it was due (their middleware's keys are due only after days), whose writes may
    land after a rotation."""

    def describe(self) -> str:
        actors = ", ".join(f"{a.name}={a.action}" for a in self.actors)
        where = f", {self.processes} processes" if self.processes > 1 else ""
        cache = " through a shared cache" if self.cached else ""
        return f"{actors}{where}{cache}"


@dataclass
class Overrides:
    """Swap a rule out, to show the checker catches it (tests/protocol/test_broken.py)."""

    repository: Callable[[RecordStore, Clock], Repository] | None = None
    cache: type[CachedSessionStore] = CachedSessionStore


@dataclass
class Result:
    """What one actor's client saw, and what its handler did."""

    actor: Actor
    presented: str | None = None
    status: int | None = None
    cookie: str | None = None
    """``"removal"``, the plaintext key a Set-Cookie carried, or ``None``."""
    sealed_value: str = ""
    """The Set-Cookie's value as a browser sends it back."""
    head: int = -1
    """When its response head (or accept) went out, in the run's order of heads."""
    body: bytes = b""
    wrote: dict[str, Any] = field(default_factory=dict)
    loaded: str | None = None
    """The seeded session whose state the handler saw (``None``: an empty session)."""
    refused: bool = False
    closed: int | None = None
    error: str | None = None
    logs: list[tuple[int, str]] = field(default_factory=list)

    @property
    def warned(self) -> bool:
        return any(level >= logging.WARNING for level, _ in self.logs)

    @property
    def acknowledged(self) -> bool:
        """Whether the client was told its request did what it asked (a late write: it was not
        told otherwise, no WARNING or ERROR was logged for it)."""
        action = self.actor.action
        if self.error is not None:
            return False
        if action in ADMIN_ACTIONS:
            return True
        if action in LATE:
            done = self.closed == 1000 if action != "stream" else self.status == 200
            return done and not (self.refused or self.warned)
        if self.status != 200 or self.refused:
            return False
        if action == "purge":
            return self.cookie == "removal"
        if action in RENEWALS:
            return self.cookie not in (None, "removal", self.presented)
        return self.cookie != "removal"


@dataclass
class Probe:
    """What a request presenting a key sees afterwards, through one process."""

    state: dict[str, Any]
    user: str | None
    id: str | None


def _lifecycle(name: str) -> BrowserSession | PersistentSession:
    if name == "browser":
        return BrowserSession()
    return PersistentSession(
        session_ttl=timedelta(hours=1),
        ttl_extension_policy=TtlExtensionPolicy.ON_EVERY_REQUEST,
        touch_after=timedelta(minutes=10) if name == "touch_after" else None,
    )


class Stage:
    """What stays from run to run: the stores' wrappers, the middlewares, the seeded records."""

    def __init__(self, scenario: Scenario, overrides: Overrides) -> None:
        self.scenario = scenario
        self.clock = Clock(T0)
        self.lifecycle = _lifecycle(scenario.lifecycle)
        setup = Run(lambda run: None, 0)
        self.db = ScheduledIndexedStore(MemorySessionStore(), "db", setup)
        self.cache = (
            ScheduledStore(MemorySessionStore(), "cache", setup) if scenario.cached else None
        )
        self.world: World | None = None
        self.groups: dict[str, str] = {}
        self.stores: list[Any] = []
        self.middlewares: list[SessionMiddleware] = []
        self.probing: list[SessionMiddleware] = []
        self.admins: list[SessionAdmin] = []
        for process in range(scenario.processes):
            store: Any = self.db
            if self.cache is not None:
                store = overrides.cache(cache=self.cache, durable=self.db)
                for actor in scenario.actors:  # its per-id locks make its actors' steps dependent
                    if actor.process == process:
                        self.groups[actor.name] = f"process{process}"
            mine = (
                store if overrides.repository is None else overrides.repository(store, self.clock)
            )
            self.stores.append(store)
            every = timedelta(days=30) if process in scenario.late else ROTATE_EVERY
            self.middlewares.append(self._middleware(mine, self.lifecycle, every))
            self.probing.append(self._middleware(store, BrowserSession(), timedelta(days=30)))
            self.admins.append(_admin(mine, self.clock))
        self.seeds: dict[str, tuple[str, str, str]] = {}
        """seed name -> (plaintext key, sealed cookie value, record id)."""
        self.seeded: list[tuple[str, bytes]] = []
        self.sealed: dict[str, str] = {}

    def _middleware(self, store: Any, lifecycle: Any, rotate_every: timedelta) -> SessionMiddleware:
        """A process's middleware; in a rotation scenario it rotates keys older than
        ``rotate_every`` (a probe's never does, but follows a rotation within its grace)."""
        return SessionMiddleware(
            self.app,
            store=store,
            key=KEY,
            cookie_name=COOKIE,
            cookie_secure=False,
            clock=self.clock,
            lifecycle=lifecycle,
            rotate_every=rotate_every if self.scenario.rotation else None,
            rotation_grace=ROTATION_GRACE,
        )

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self.world is not None
        await self.world.app(scope, receive, send)

    async def seed(self, world: World) -> None:
        """Seed the sessions through the first process (no scheduling, no faults)."""
        for seed in self.scenario.seeds:
            headers = [(b"x-seed", seed.name.encode())]
            if seed.user is not None:
                headers.append((b"x-user", seed.user.encode()))
            seeded = await world.request(0, "seed", None, headers, probing=False)
            key = seeded.cookie
            assert key not in (None, "removal"), f"seeding {seed.name} failed"
            assert key is not None
            probe = await world.probe(key, 0)
            assert probe.id is not None and probe.state.get("seed") == seed.name
            self.seeds[seed.name] = (key, world.sealed[key], probe.id)
            record = at_once(self.db.backing.get(probe.id))
            self.seeded.append((probe.id, record.data))
        self.sealed = dict(world.sealed)

    def reset(self, run: Run) -> None:
        """Fresh records from the seed, a cold cache, the clock at the start."""
        backing = MemorySessionStore()
        ttl = self.lifecycle.ttl
        for id, data in self.seeded:
            at_once(backing.put(id, data, ttl, expect=ABSENT))
        for seed in self.scenario.seeds:
            if seed.user is not None and seed.name in self.seeds:
                at_once(backing.index_add(seed.user, self.seeds[seed.name][2], ttl))
        self.db.backing, self.db.run = backing, run
        if self.cache is not None:
            self.cache.backing, self.cache.run = MemorySessionStore(), run
        self.clock.now = T0 + (11 * 60 if self.scenario.lifecycle == "touch_after" else 0)
        if self.scenario.rotation:
            self.clock.now = T0 + ROTATE_EVERY.total_seconds()
        run.groups = self.groups
        run.on_expire = self._expired

    def _expired(self, store: str, data: bytes) -> None:
        """A durable record reached its TTL: the clock is past the time its envelope gives
        (one clock decides expiry; a cached copy's TTL is the cache's own)."""
        found = envelope(data) if store == "db" else None
        if found is not None and isinstance(found.get("expires"), (int, float)):
            self.clock.now = max(self.clock.now, found["expires"] + 1)


class World:
    """One run: its results, what its app saw, the probes after."""

    def __init__(self, stage: Stage, run: Run) -> None:
        self.stage = stage
        self.scenario = stage.scenario
        self.run = run
        self.seeds = stage.seeds
        self.sealed: dict[str, str] = dict(stage.sealed)
        """plaintext key -> a sealed cookie value carrying it."""
        self.results: dict[str, Result] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.probes: dict[tuple[str, int], Probe] = {}
        self.after_grace: dict[tuple[str, int], Probe] = {}
        """Rotation scenarios: what each seeded key opens once the rotation grace is over."""
        self.index_problems: list[str] = []
        self.heads = 0

    # -- phases ------------------------------------------------------------------------------

    async def act(self) -> None:
        """Start every actor at once; the scheduler interleaves their store calls."""
        tasks = [asyncio.ensure_future(self._actor(actor)) for actor in self.scenario.actors]
        for task, actor in zip(tasks, self.scenario.actors, strict=True):
            task.set_name(actor.name)
        self.run.tasks = tasks
        await asyncio.gather(*tasks, return_exceptions=True)

    async def observe(self) -> None:
        """Probe every key any client saw, through every process; list the user's sessions."""
        ACTOR.set("probe")
        for key in list(self.sealed):
            for process in range(self.scenario.processes):
                self.probes[key, process] = await self.probe(key, process)
        if any(seed.user for seed in self.scenario.seeds):
            await self.stage.admins[0].sessions_for(USER)
            for member in at_once(self.stage.db.backing.index_members(USER)):
                record = await self.stage.stores[0].get(member)  # as the listing read it
                stored = None if record is None else envelope(record.data)
                if stored is None or stored.get("user") != USER:
                    what = "gone" if record is None else "ended"
                    self.index_problems.append(
                        f"after one listing the user index still lists a session that is {what}"
                    )
        if self.scenario.rotation:
            self.stage.clock.now += ROTATION_GRACE.total_seconds()
            for key, _, _ in self.seeds.values():
                for process in range(self.scenario.processes):
                    self.after_grace[key, process] = await self.probe(key, process, app=True)

    async def probe(self, key: str, process: int, app: bool = False) -> Probe:
        """What a request presenting ``key`` sees through ``process``: by a probing middleware
        that never rotates (or, ``app``, by the actors' own, whose repository may be another)."""
        seen = await self.request(process, "probe", self.sealed[key], [], probing=not app)
        assert seen.status == 200, f"a probe got {seen.status}"
        body = json.loads(seen.body)
        return Probe(body["state"], body["user"], body["id"])

    # -- actors ------------------------------------------------------------------------------

    async def _actor(self, actor: Actor) -> None:
        ACTOR.set(actor.name)
        key, sealed, id = self.seeds[actor.session] if actor.session else (None, None, None)
        result = self.results[actor.name] = Result(actor, presented=key)
        try:
            if actor.action in ADMIN_ACTIONS:
                admin = self.stage.admins[actor.process]
                if actor.action == "signout":
                    await admin.end_all_for(USER)
                else:
                    await admin.end_session(id or "")
            elif actor.action in ("ws", "ws_late"):
                await self._websocket(actor, sealed, result)
            else:
                headers = [(b"x-actor", actor.name.encode())]
                await self.request(actor.process, actor.action, sealed, headers, result=result)
        except Exception as exc:  # what escaped the middleware (or an admin call's error)
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            report = self.reports.get(actor.name, {})
            result.wrote = report.get("wrote", {})
            result.loaded = report.get("loaded")
            result.refused = "refused" in report
            result.logs = [(level, text) for who, level, text in self.run.logs if who == actor.name]

    async def request(
        self,
        process: int,
        path: str,
        sealed: str | None,
        headers: list[tuple[bytes, bytes]],
        *,
        probing: bool = False,
        result: Result | None = None,
    ) -> Result:
        """One HTTP request with the session cookie ``sealed`` (if any)."""
        stage = self.stage
        middleware = (stage.probing if probing else stage.middlewares)[process]
        result = result if result is not None else Result(Actor("probe", path))
        if sealed is not None:
            headers = [(b"cookie", f"{COOKIE}={sealed}".encode()), *headers]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": f"/{path}",
            "raw_path": f"/{path}".encode(),
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 443),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                result.status = message["status"]
                self._head(result, message.get("headers", ()))
            elif message["type"] == "http.response.body":
                result.body += message.get("body", b"")

        await middleware(scope, receive, send)
        return result

    async def _websocket(self, actor: Actor, sealed: str | None, result: Result) -> None:
        headers = [(b"x-actor", actor.name.encode())]
        if sealed is not None:
            headers.insert(0, (b"cookie", f"{COOKIE}={sealed}".encode()))
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "wss",
            "path": f"/{actor.action}",
            "raw_path": f"/{actor.action}".encode(),
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                result.status = 101
                self._head(result, message.get("headers", ()))
            elif kind == "websocket.send":
                result.body = message["text"].encode()
            elif kind == "websocket.close":
                result.closed = message.get("code", 1000)

        await self.stage.middlewares[actor.process](scope, receive, send)

    def _head(self, result: Result, headers: Any) -> None:
        result.head, self.heads = self.heads, self.heads + 1
        for name, value in headers:
            if name.lower() != b"set-cookie":
                continue
            line = value.decode("latin-1")
            sealed = line.split(";", 1)[0].partition("=")[2]
            if not sealed or "max-age=0" in line.lower():
                result.cookie = "removal"
                continue
            opened = unseal(ContentSecurity.PRIVATE, [KEY], COOKIE, unquote(sealed))
            assert opened is not None, "a Set-Cookie the key does not open"
            result.cookie, result.sealed_value = opened[0], sealed
            self.sealed.setdefault(opened[0], sealed)

    # -- the app -----------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A raw-ASGI app using only the public Session API; it notes what it did."""
        session = scope["session"]
        headers = dict(scope["headers"])
        actor = headers.get(b"x-actor", b"").decode()
        action = scope["path"].lstrip("/")
        await receive()
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            if action == "ws_late":  # the connection stays open past the tombstone's TTL
                await self.run.pause(self._elapse)
            self.reports[actor] = report = _act(session, "write", actor, headers)
            await send({"type": "websocket.send", "text": json.dumps(report)})
            await send({"type": "websocket.close", "code": 1000})
            return
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if action == "stream":
            await send(start)
            self.reports[actor] = report = _act(session, "write", actor, headers)
        else:
            report = _act(session, action, actor, headers)
            if actor:
                self.reports[actor] = report
            await send(start)
        await send({"type": "http.response.body", "body": json.dumps(report).encode()})

    def _elapse(self) -> None:
        """More than the tombstone TTL (and the cache's) passes: tombstones and cached copies
        are gone; sessions, whose TTL is hours, stay."""
        stage = self.stage
        stage.clock.now += TOMBSTONE_TTL.total_seconds() + 1
        db = stage.db.backing
        for id in [id for id, _ in stage.seeded] + [
            e.id for e in self.run.effects if e.store == "db"
        ]:
            record = at_once(db.get(id))
            if record is not None and envelope(record.data) is None:
                at_once(db.delete(id))
        if stage.cache is not None:
            stage.cache.backing = MemorySessionStore()

    def explain(self) -> str:
        """The run told step by step: store effects, then what each client got."""
        run, lines = self.run, []
        for effect in run.effects:
            fault = f" !{effect.fault}" if effect.fault else ""
            data = "" if effect.data is None else f" {effect.data[:90]!r}"
            target = effect.id if effect.op.startswith("index_") else run.name(effect.id)
            lines.append(
                f"  {effect.seq:3} {effect.actor}: {effect.store}.{effect.op}"
                f" {target}{data} -> {effect.result!r}{fault}"
            )
        for result in self.results.values():
            cookie = result.cookie
            if cookie not in (None, "removal"):
                cookie = f"key {cookie[:6]}"
            lines.append(
                f"  {result.actor.name} {result.actor.action} (loaded {result.loaded}):"
                f" status {result.status}, closed {result.closed}, head {result.head}, {cookie},"
                f" wrote {result.wrote}, refused {result.refused}, error {result.error},"
                f" logs {[text[:60] for _, text in result.logs]}"
            )
        return "\n".join(lines)


def _act(session: Any, action: str, actor: str, headers: dict[bytes, bytes]) -> dict[str, Any]:
    if action == "probe":
        return {"state": dict(session), "user": session.user_id, "id": session.id}
    report: dict[str, Any] = {"loaded": session.get("seed")}  # read as the action starts
    try:
        report.update(_do(session, action, actor, headers))
    except SessionError as exc:
        report["refused"] = str(exc)
    return report


def _do(session: Any, action: str, actor: str, headers: dict[bytes, bytes]) -> dict[str, Any]:
    if action == "seed":
        session["seed"] = headers[b"x-seed"].decode()
        session["cart"] = ["s"]
        if b"x-user" in headers:
            session.bind_user(headers[b"x-user"].decode())
        return {}
    if action in ("read", "rotate"):
        return {"read": len(session)}
    if action == "write":
        session[f"w_{actor}"] = actor
        return {"wrote": {f"w_{actor}": actor}}
    if action == "nested":
        cart = session.get("cart")
        if cart is None:
            session["cart"] = cart = []
        cart.append(actor)  # in place: saved because the state differs from what loaded
        return {"wrote": {"cart": list(cart)}}
    if action == "update_or":
        session.update_or("n", 1, lambda n: n + 1)
        return {"wrote": {"n": session["n"]}, "increments": "n"}
    if action == "login":
        session[f"w_{actor}"] = actor
        session.bind_user(USER)
        session.renew()
        return {"wrote": {f"w_{actor}": actor}}
    if action == "renew":
        session.renew()
        return {}
    if action == "purge":
        session.purge()
        return {}
    raise AssertionError(f"unknown action {action}")


def _admin(store: Any, clock: Clock) -> SessionAdmin:
    """The admin operations on the middleware's clock, over its store or its repository."""
    return SessionAdmin(store, clock=clock)


def envelope(data: bytes | None) -> dict[str, Any] | None:
    """A stored record's envelope, read as the checker's own oracle (not with the library's
    reader): ``None`` for a tombstone, nothing, or something unreadable."""
    try:
        found = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("v") == 0:
        return None
    return found


def state_of(data: bytes | None) -> dict[str, Any] | None:
    """The state a stored record holds (``None``: a tombstone, nothing, or unreadable)."""
    found = envelope(data)
    state = None if found is None else found.get("state")
    return state if isinstance(state, dict) else None


def tombstone(data: bytes | None) -> tuple[bool, str | None]:
    """``(True, successor)`` for a tombstone, else ``(False, None)``."""
    try:
        found = json.loads(data) if data is not None else None
    except ValueError:
        return False, None
    if isinstance(found, dict) and found.get("v") == 0:
        return True, found.get("successor")
    return False, None


class execute:
    """The ``Execute`` the checker calls: one run of ``scenario`` (seeding it the first time),
    then the invariants. ``world`` is the last run's (``World.explain`` tells it)."""

    def __init__(self, scenario: Scenario, overrides: Overrides | None = None) -> None:
        self.stage = Stage(scenario, overrides or Overrides())
        self.world: World | None = None

    def __call__(self, run: Run, loop: CheckerLoop) -> list[str] | None:
        from tests.protocol.invariants import check

        stage = self.stage
        with _captured(run):
            if not stage.seeds:
                stage.reset(run)
                stage.clock.now = T0
                stage.world = World(stage, run)
                loop.run_until_complete(stage.seed(stage.world))
            stage.reset(run)
            world = self.world = stage.world = World(stage, run)
            run.scheduling = True
            try:
                loop.run_until_complete(world.act())
            except BaseException:
                run.abandon()  # let every actor unwind before the error goes on
                loop.run_until_complete(asyncio.gather(*run.tasks, return_exceptions=True))
                raise
            finally:
                run.scheduling = False
        if run.abandoned:
            return None
        loop.run_until_complete(world.observe())
        return check(world)


class _captured:
    """Log records of the ``sessionware`` loggers during a run, by actor (not propagated)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __enter__(self) -> None:
        self.logger = logging.getLogger("sessionware")
        self.saved = self.logger.level, self.logger.propagate
        self.logger.setLevel(logging.WARNING)
        self.logger.propagate = False
        self.handler = _Handler(self.run)
        self.logger.addHandler(self.handler)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.level, self.logger.propagate = self.saved


class _Handler(logging.Handler):
    def __init__(self, run: Run) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.logs.append((ACTOR.get(), record.levelno, record.getMessage()))
