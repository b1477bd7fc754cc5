"""A deterministic scheduler for asyncio: every record-store call is a scheduling point.

Stateless model checking, in the manner of Rust's loom or CHESS, applied to one asyncio event
loop. Actors (requests through real middlewares, admin calls) run as tasks; each record-store
call they make goes through a ``ScheduledStore``, which parks it. When the loop has nothing
left to run (every actor is parked, finished, or waiting on something only a store call can
release), the scheduler picks which parked call takes effect next, and with which fault, runs
it against the real ``MemorySessionStore`` underneath, and lets the loop go on. Timers
(``asyncio.sleep`` in a backoff) run on virtual time: they fire before any choice is made, so
every actor that can reach a store call has reached it.

A run is one sequence of choices (a ``Step`` list, the *schedule*). ``explore`` enumerates
schedules depth first, re-running the scenario from scratch for each prefix, with sleep sets
(Godefroid) as partial-order reduction: calls on different records, different user-index
members, or with no effect at all commute, so of two orders of commuting calls only one is
run. ``sample`` draws a bounded number of schedules from a seeded generator instead, for
scenarios too large to enumerate. ``replay`` runs one schedule, as text, for a regression test.

The fault model, at each store call (at most ``faults`` per run):

``fail``   the call fails before it takes effect (the caller sees ``StoreError``)
``lost``   the call takes effect and its reply is lost (the caller sees ``StoreError``)
``retry``  the call takes effect, its reply is lost, and the client sends it again (the Redis
           store's retry-once on a dropped connection); the second attempt is scheduled like
           any call (``again``) and its answer is what the caller sees
``expire`` the record the call touches reaches its TTL just before the call
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import selectors
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sessionware.stores import MemorySessionStore, StoreError

ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("protocol_actor", default="setup")
"""The actor whose code is running (each actor's task sets it first)."""

READS = frozenset({"get", "index_members"})
FAULTS: dict[str, tuple[str, ...]] = {
    "get": ("fail", "expire"),  # a lost reply to a read is a failure; a retried read, a read
    "put": ("fail", "lost", "retry", "expire"),
    "touch": ("fail", "lost", "expire"),  # a retried touch touches twice: the same as once
    "delete": ("fail", "lost"),
    "index_add": ("fail", "lost"),
    "index_remove": ("fail", "lost"),
    "index_members": ("fail",),
}
"""The faults that can change what happens at each kind of call (the others are equivalent to
one of these or to no fault)."""


class NondeterminismError(RuntimeError):
    """A replayed prefix offered other choices than when it was first run: the scenario depends
    on something the scheduler does not control."""


class Deadlock(RuntimeError):
    """Actors are waiting and no store call is parked: nothing the scheduler does can wake them."""


@dataclass(frozen=True)
class Step:
    """One choice: the ``call``-th store call of ``actor`` takes effect, with ``fault``."""

    actor: str
    call: int
    op: str
    fault: str = ""

    def __str__(self) -> str:
        return f"{self.actor}.{self.call} {self.op}" + (f" !{self.fault}" if self.fault else "")

    @classmethod
    def parse(cls, text: str) -> Step:
        head, _, fault = text.strip().partition("!")
        name, op = head.split()
        actor, _, call = name.rpartition(".")
        return cls(actor, int(call), op, fault.strip())


def format_schedule(steps: Iterable[Step]) -> str:
    """A schedule as ``replay`` reads it: steps separated by ``;``."""
    return "; ".join(str(step) for step in steps)


def parse_schedule(text: str) -> list[Step]:
    return [Step.parse(part) for part in text.split(";") if part.strip()]


@dataclass(frozen=True)
class Access:
    """What a step touches, for the independence relation: ``space`` (store and namespace),
    ``key`` (record id or user), ``member`` (an index member; ``None``: the whole key)."""

    space: str
    key: str
    write: bool
    member: str | None = None

    def conflicts(self, other: Access) -> bool:
        if self.space != other.space or self.key != other.key:
            return False
        if not (self.write or other.write):
            return False
        return self.member is None or other.member is None or self.member == other.member


EVERYTHING = Access("*", "*", True)
"""What a pause touches: time passes for every record."""


@dataclass(frozen=True)
class Choice:
    """A step as offered at one scheduling point, with what it touches."""

    step: Step
    access: Access | None  # None: no effect on any store (a failure before the call)
    group: str  # steps of one group never commute (actors sharing a process-local lock)


def independent(a: Choice, b: Choice) -> bool:
    """Whether running ``a`` then ``b`` ends as ``b`` then ``a`` does, and neither disables the
    other (faults share one budget, so two faulty steps never commute)."""
    if a.step.actor == b.step.actor or a.group == b.group:
        return False
    if a.access is EVERYTHING or b.access is EVERYTHING:
        return False
    if a.step.fault and b.step.fault:
        return False
    if a.access is None or b.access is None:
        return True
    return not a.access.conflicts(b.access)


@dataclass
class Effect:
    """A store call that took effect (or a record that expired), in the order they happened."""

    seq: int
    actor: str
    store: str
    op: str
    id: str
    data: bytes | None
    result: Any
    fault: str


@dataclass
class _Parked:
    actor: str
    call: int
    store: ScheduledStore | None  # None: a pause (``Run.pause``)
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    retried: bool = False


class Clock:
    """The one logical clock of a world: middlewares, repositories and stores read it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Chooser = Callable[["Run"], "Choice | None"]


class Run:
    """One execution: the parked calls, the steps taken, the effects, the fault budget."""

    def __init__(self, chooser: Chooser, faults: int, max_steps: int = 400) -> None:
        self.chooser = chooser
        self.faults_left = faults
        self.max_steps = max_steps
        self.parked: dict[str, _Parked] = {}
        self.calls: dict[str, int] = {}
        self.groups: dict[str, str] = {}
        self.names: dict[str, str] = {}
        """Record ids by order of first use (``r1``, ``r2``...): keys are random, so ids differ
        from run to run, but a replayed prefix uses the same records in the same order."""
        self.steps: list[Step] = []
        self.effects: list[Effect] = []
        self.logs: list[tuple[str, int, str]] = []
        self.fresh: set[tuple[str, str]] = set()
        """Records written during the run: their TTL is new (minutes at least), so none of
        them reaches it within the run; only older records can expire."""
        self.on_expire: Callable[[str, bytes], None] = lambda store, data: None
        """Told of each record an ``expire`` fault drops: time has passed its TTL."""
        self.scheduling = False
        self.abandoned = False
        self.tasks: list[asyncio.Task[Any]] = []

    # -- what the stores call ----------------------------------------------------------------

    async def call(self, store: ScheduledStore | None, op: str, *args: Any, **kwargs: Any) -> Any:
        actor = ACTOR.get()
        if not self.scheduling:  # setup and probes: straight through, no choice, no fault
            assert store is not None
            return self._apply(actor, store, op, args, kwargs, "")
        if self.abandoned:
            raise asyncio.CancelledError
        if actor in self.parked:
            raise RuntimeError(f"actor {actor} made two store calls at once")
        number = self.calls[actor] = self.calls.get(actor, 0) + 1
        if store is not None:  # named as parked: the same order in every replay of a prefix
            for id in args[1:2] if op in ("index_add", "index_remove") else args[:1]:
                self.name(id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.parked[actor] = _Parked(actor, number, store, op, args, kwargs, future)
        try:
            return await future
        finally:
            if self.parked.get(actor) is not None and self.parked[actor].future is future:
                del self.parked[actor]

    async def pause(self, elapse: Callable[[], None]) -> None:
        """A scheduling point where a long time passes (``elapse`` makes it so): an actor that
        holds a connection open for minutes (a WebSocket) parks here."""
        await self.call(None, "sleep", elapse)

    def name(self, id: Any) -> str:
        """The stable name of a record id (or user) in this run."""
        return self.names.setdefault(str(id), f"r{len(self.names) + 1}")

    def _apply(
        self,
        actor: str,
        store: ScheduledStore,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fault: str,
    ) -> Any:
        result = at_once(getattr(store.backing, op)(*args, **kwargs))
        if op not in READS and self.scheduling:
            data = args[1] if op == "put" else None
            self._record(actor, store.name, op, str(args[0]), data, result, fault)
            if op in ("put", "touch"):
                self.fresh.add((store.name, str(args[0])))
        return result

    def _record(
        self, actor: str, store: str, op: str, id: str, data: bytes | None, result: Any, fault: str
    ) -> None:
        self.effects.append(Effect(len(self.effects), actor, store, op, id, data, result, fault))

    # -- scheduling --------------------------------------------------------------------------

    def choices(self) -> list[Choice]:
        out: list[Choice] = []
        for actor in sorted(self.parked):
            parked = self.parked[actor]
            group = self.groups.get(actor, actor)
            if parked.store is None:  # a pause: once every other request is over
                if not any(self._busy(task, actor) for task in self.tasks):
                    out.append(Choice(Step(actor, parked.call, parked.op), EVERYTHING, group))
                continue
            if parked.retried:
                step = Step(actor, parked.call, parked.op, "again")
                out.append(Choice(step, self._access(parked, write=True), group))
                continue
            out.append(Choice(Step(actor, parked.call, parked.op), self._access(parked), group))
            if self.faults_left <= 0:
                continue
            for fault in FAULTS[parked.op]:
                if fault == "expire" and not self._may_expire(parked.store, str(parked.args[0])):
                    continue
                access = None if fault == "fail" else self._access(parked, write=True)
                out.append(Choice(Step(actor, parked.call, parked.op, fault), access, group))
        return out

    def _busy(self, task: asyncio.Task[Any], than: str) -> bool:
        """Whether ``task`` is another actor still in a request (not done, not paused)."""
        name = task.get_name()
        if name == than or task.done():
            return False
        parked = self.parked.get(name)
        return parked is None or parked.store is not None

    def _may_expire(self, store: ScheduledStore, id: str) -> bool:
        """Whether there is a record to expire, and its TTL was set before the run."""
        if (store.name, id) in self.fresh:
            return False
        return at_once(store.backing.get(id)) is not None

    def _access(self, parked: _Parked, write: bool = False) -> Access:
        assert parked.store is not None
        op, args, store = parked.op, parked.args, parked.store.name
        if op.startswith("index_"):
            member = None if op == "index_members" else self.name(args[1])
            return Access(f"{store}:index", str(args[0]), op != "index_members", member)
        return Access(f"{store}:record", self.name(args[0]), write or op not in READS)

    def idle(self) -> None:
        """The loop has nothing to run: take one step (or give the run up)."""
        if self.abandoned:
            raise Deadlock("an abandoned run is still waiting")
        if not self.parked:
            waiting = [t.get_name() for t in self.tasks if not t.done()]
            raise Deadlock(f"actors {waiting} wait, and no store call is parked")
        if len(self.steps) >= self.max_steps:
            raise RuntimeError(f"no end after {self.max_steps} store calls")
        choice = self.chooser(self)
        if choice is None:
            self.abandon()
            return
        self.take(choice.step)

    def take(self, step: Step) -> None:
        parked = self.parked.get(step.actor)
        if parked is None or parked.call != step.call or parked.op != step.op:
            raise NondeterminismError(f"{step} is not parked (parked: {self.describe_parked()})")
        self.steps.append(step)
        fault = step.fault
        if fault and fault != "again":
            self.faults_left -= 1
        future = parked.future
        if parked.store is None:  # a pause: time passes
            del self.parked[step.actor]
            parked.args[0]()
            self._record(step.actor, "*", "sleep", "*", None, None, "")
            future.set_result(None)
            return
        if fault == "fail":
            del self.parked[step.actor]
            future.set_exception(StoreError("checker: the call failed before taking effect"))
            return
        if fault == "expire":
            id = str(parked.args[0])
            before = at_once(parked.store.backing.get(id))
            at_once(parked.store.backing.delete(id))
            data = None if before is None else before.data
            if data is not None:
                self.on_expire(parked.store.name, data)
            self._record(step.actor, parked.store.name, "expire", id, data, None, fault)
        result = self._apply(step.actor, parked.store, parked.op, parked.args, parked.kwargs, fault)
        if fault == "retry":
            parked.retried = True  # it stays parked: the client sends it again
            return
        del self.parked[step.actor]
        if fault == "lost":
            future.set_exception(StoreError("checker: the call took effect; its reply was lost"))
        else:
            future.set_result(result)

    def abandon(self) -> None:
        """Stop a run the reduction has shown redundant: every actor is cancelled."""
        self.abandoned = True
        for task in self.tasks:
            task.cancel()

    def signature(self) -> tuple[Any, ...]:
        """What the choices here depend on (cheaper to compare than the choices)."""
        parked = tuple(
            (p.actor, p.call, p.op, p.retried, self._target(p)) for p in self.parked.values()
        )
        return (*sorted(parked), self.faults_left)

    def _target(self, parked: _Parked) -> str:
        """The record (or index member) a parked call is about, by its stable name."""
        if parked.store is None:
            return ""
        if parked.op in ("index_add", "index_remove"):
            return self.names.get(str(parked.args[1]), "?")
        return str(parked.args[0]) if parked.op == "index_members" else self.name(parked.args[0])

    def describe_parked(self) -> str:
        return ", ".join(f"{p.actor}.{p.call} {p.op}" for p in self.parked.values()) or "none"


def at_once(coroutine: Awaitable[Any]) -> Any:
    """The result of a coroutine that never suspends (the memory store's methods)."""
    assert asyncio.iscoroutine(coroutine)
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the model store suspended: it must answer at once")


class ScheduledStore:
    """A record store whose every call is a scheduling point; ``backing`` holds the records."""

    def __init__(self, backing: MemorySessionStore, name: str, run: Run) -> None:
        self.backing = backing
        self.name = name
        self.hash_keys = True
        self.run = run

    async def get(self, id: str) -> Any:
        return await self.run.call(self, "get", id)

    async def put(self, id: str, data: bytes, ttl: timedelta, *, expect: Any) -> Any:
        return await self.run.call(self, "put", id, data, ttl, expect=expect)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return bool(await self.run.call(self, "touch", id, ttl))

    async def delete(self, id: str) -> None:
        await self.run.call(self, "delete", id)


class ScheduledIndexedStore(ScheduledStore):
    """A ``ScheduledStore`` with the optional per-user index."""

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self.run.call(self, "index_add", user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self.run.call(self, "index_remove", user, id)

    async def index_members(self, user: str) -> list[str]:
        return list(await self.run.call(self, "index_members", user))


# -- the event loop ----------------------------------------------------------------------------


class _Selector(selectors.SelectSelector):
    """No I/O happens in a checked run: waiting means a scheduling point, or virtual time."""

    def __init__(self, loop_time: Callable[[float], None], on_idle: Callable[[], None]) -> None:
        super().__init__()
        self._advance = loop_time
        self.on_idle = on_idle

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            self.on_idle()
        elif timeout > 0:
            self._advance(timeout)
        return []


class CheckerLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time whose idle moments are the scheduler's choices."""

    def __init__(self) -> None:
        self._virtual = 0.0
        self.run: Run | None = None
        super().__init__(_Selector(self._advance, self._idle))

    def time(self) -> float:
        return self._virtual

    def _advance(self, seconds: float) -> None:
        self._virtual += seconds

    def _idle(self) -> None:
        if self.run is None or not self.run.scheduling:
            raise Deadlock("the loop waits outside a scheduled phase")
        self.run.idle()


# -- exploring ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """What an exploration covered."""

    runs: int = 0
    complete: int = 0
    """Runs that reached the end and were checked (distinct schedules)."""
    pruned: int = 0
    """Runs the sleep sets cut short: every remaining order was already covered."""
    steps: int = 0
    max_depth: int = 0
    exhaustive: bool = False
    seconds: float = 0.0
    violations: list[Violation] = field(default_factory=list)

    sampled: bool = False

    def summary(self) -> str:
        if self.sampled:
            how = f"sampled: {self.runs} draws"
        else:
            how = "exhaustive" if self.exhaustive else "truncated"
            how += f"; {self.pruned} pruned runs"
        found = f", {len(self.violations)} violating" if self.violations else ""
        return (
            f"{self.complete} schedules ({how}, {self.steps} store calls, depth <="
            f" {self.max_depth}){found} in {self.seconds:.1f}s"
        )


@dataclass
class Violation:
    """An invariant broken by one schedule."""

    schedule: str
    problems: list[str]

    def __str__(self) -> str:
        lines = "\n  ".join(self.problems)
        return f"schedule: {self.schedule}\n  {lines}"


Execute = Callable[[Run, CheckerLoop], list[str] | None]
"""Runs a scenario once under ``Run``; the invariants it broke (``None``: the run was pruned)."""


@dataclass
class _Node:
    choices: list[Choice]
    sleep: list[Choice]
    chosen: int
    signature: tuple[Any, ...]
    done: list[Choice] = field(default_factory=list)

    def sleeping(self, choice: Choice) -> bool:
        return any(s.step == choice.step for s in self.sleep)

    def tried(self, choice: Choice) -> bool:
        return any(d.step == choice.step for d in self.done)


class _DepthFirst:
    """The chooser for ``explore``: follows the stack's prefix, then takes the first choice
    that is not asleep, pushing a node for each new scheduling point."""

    def __init__(self, reduce: bool = True) -> None:
        self.stack: list[_Node] = []
        self.depth = 0
        self.reduce = reduce

    def __call__(self, run: Run) -> Choice | None:
        depth = self.depth
        self.depth += 1
        signature = run.signature()
        if depth < len(self.stack):
            node = self.stack[depth]
            if node.signature != signature:
                raise NondeterminismError(
                    f"at step {depth} the replay has {run.describe_parked()} parked, the first"
                    f" run had {[str(c.step) for c in node.choices if not c.step.fault]}"
                )
            return node.choices[node.chosen]
        choices = run.choices()
        sleep = self._child_sleep()
        for index, choice in enumerate(choices):
            if not any(s.step == choice.step for s in sleep):
                self.stack.append(_Node(choices, sleep, index, signature))
                return choice
        return None  # everything here is asleep: this order was covered by another

    def _child_sleep(self) -> list[Choice]:
        if not (self.stack and self.reduce):
            return []
        parent = self.stack[-1]
        taken = parent.choices[parent.chosen]
        return [c for c in (*parent.sleep, *parent.done) if independent(c, taken)]

    def backtrack(self) -> bool:
        """Move to the next unexplored choice; ``False`` when the tree is done."""
        self.depth = 0
        while self.stack:
            node = self.stack[-1]
            node.done.append(node.choices[node.chosen])
            for index, choice in enumerate(node.choices):
                if not (node.tried(choice) or node.sleeping(choice)):
                    node.chosen = index
                    return True
            self.stack.pop()
        return False


class _Random:
    """The chooser for ``sample``, from a seeded generator: an actor uniformly among those
    parked, then its call without a fault, or (one time in ``1 / fault_rate``) with one of its
    faults, so that faults land early and late in a run alike."""

    def __init__(self, seed: int, fault_rate: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate

    def __call__(self, run: Run) -> Choice | None:
        choices = run.choices()
        actor = self.rng.choice(sorted({c.step.actor for c in choices}))
        mine = [c for c in choices if c.step.actor == actor]
        faulty = [c for c in mine if c.step.fault and c.step.fault != "again"]
        if faulty and self.rng.random() < self.fault_rate:
            return self.rng.choice(faulty)
        return next(c for c in mine if c not in faulty)


class _Fixed:
    """The chooser for ``replay``: the given steps, then the first choice, fault-free."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.position = 0

    def __call__(self, run: Run) -> Choice | None:
        choices = run.choices()
        if self.position < len(self.steps):
            step = self.steps[self.position]
            self.position += 1
            for choice in choices:
                if choice.step == step:
                    return choice
            raise NondeterminismError(
                f"{step} is not among the choices {[str(c.step) for c in choices]}"
            )
        return next((c for c in choices if not c.step.fault or c.step.fault == "again"), None)


def _one(execute: Execute, chooser: Chooser, faults: int, loop: CheckerLoop) -> tuple[Run, Any]:
    """One run; ``random`` (the repository's backoff jitter) starts from the same seed in
    every run, so sleeping actors wake in the same order when a prefix is replayed."""
    run = Run(chooser, faults)
    loop.run = run
    saved = random.getstate()
    random.seed(0)
    try:
        return run, execute(run, loop)
    finally:
        random.setstate(saved)


def explore(
    execute: Execute,
    *,
    faults: int,
    max_runs: int,
    stop_at_first: bool = False,
    reduce: bool = True,
) -> Stats:
    """Every schedule of the scenario (up to sleep-set equivalence; every one at all without
    ``reduce``), at most ``max_runs`` runs."""
    stats = Stats()
    dfs = _DepthFirst(reduce)
    started = time.perf_counter()
    with _loop() as loop:
        while True:
            run, problems = _one(execute, dfs, faults, loop)
            _count(stats, run, problems)
            if problems and stop_at_first:
                break
            if not dfs.backtrack():
                stats.exhaustive = True
                break
            if stats.runs >= max_runs:
                break
    stats.seconds = time.perf_counter() - started
    return stats


def sample(execute: Execute, *, faults: int, runs: int, seed: int) -> Stats:
    """``runs`` schedules drawn with ``random.Random(seed)``: the same ones on every machine."""
    stats = Stats(sampled=True)
    started = time.perf_counter()
    seen: set[str] = set()
    with _loop() as loop:
        for number in range(runs):
            run, problems = _one(execute, _Random(seed * 1_000_003 + number), faults, loop)
            schedule = format_schedule(run.steps)
            if schedule in seen:  # drawn before: counted once
                stats.runs += 1
                continue
            seen.add(schedule)
            _count(stats, run, problems)
    stats.seconds = time.perf_counter() - started
    return stats


def replay(execute: Execute, schedule: str, *, faults: int = 2) -> tuple[Run, list[str]]:
    """Run one schedule (as ``format_schedule`` wrote it); the invariants it broke."""
    chooser = _Fixed(parse_schedule(schedule))
    with _loop() as loop:
        run, problems = _one(execute, chooser, faults, loop)
    if chooser.position < len(chooser.steps):
        left = format_schedule(chooser.steps[chooser.position :])
        raise NondeterminismError(f"the run ended before the schedule did: {left} left")
    assert problems is not None
    return run, problems


def _count(stats: Stats, run: Run, problems: list[str] | None) -> None:
    stats.runs += 1
    stats.steps += len(run.steps)
    stats.max_depth = max(stats.max_depth, len(run.steps))
    if problems is None:
        stats.pruned += 1
        return
    stats.complete += 1
    if problems:
        stats.violations.append(Violation(format_schedule(run.steps), problems))


class _loop:
    """A fresh ``CheckerLoop`` for one exploration, closed after."""

    def __enter__(self) -> CheckerLoop:
        self.loop = CheckerLoop()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.loop.close()
