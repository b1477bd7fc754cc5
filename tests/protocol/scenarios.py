"""The scenarios the checker explores: 2-3 concurrent actors each, with the fault model.

Automatic rotation: in a ``rotation=True`` scenario the seeded keys are due, so every request
presenting one rotates it (``rotate`` is a request that only reads) or follows the rotation that
won; loads and writes follow a rotation's successor within its grace (invariant 3 holds only
for login renewals), and after it the old key opens nothing (invariant 4). ``update_or`` is a
read-modify-write merged into the stored value, counted by invariant 1.

One process's writes of one session take turns (``Repository.save`` and a renewal's swap,
a rotation's too), so actors that write one session run in separate processes, where their
store calls interleave freely; the ``*_one_process`` scenarios explore the turns themselves.
"""

from __future__ import annotations

from tests.protocol.world import USER, Actor, Scenario, Seed

LOGGED_IN = (Seed("L", user=USER),)
TWO_DEVICES = (Seed("L", user=USER), Seed("M", user=USER))

SCENARIOS = [
    Scenario("login_alone", (Actor("A", "login"),), seeds=LOGGED_IN, faults=2),
    Scenario("write_write", (Actor("A", "write"), Actor("B", "write", process=1)), processes=2),
    Scenario("write_write_one_process", (Actor("A", "write"), Actor("B", "write"))),
    Scenario(
        "write_other_session",
        (Actor("A", "write"), Actor("B", "write", session="M")),
        seeds=(Seed("L"), Seed("M")),
    ),
    Scenario("nested_nested", (Actor("A", "nested"), Actor("B", "nested", process=1)), processes=2),
    Scenario(
        "update_or_twice",
        (Actor("A", "update_or"), Actor("B", "update_or", process=1)),
        processes=2,
    ),
    Scenario("update_or_one_process", (Actor("A", "update_or"), Actor("B", "update_or"))),
    Scenario("login_write", (Actor("A", "login"), Actor("B", "write", process=1)), processes=2),
    Scenario("login_write_one_process", (Actor("A", "login"), Actor("B", "write"))),
    Scenario("login_nested", (Actor("A", "login"), Actor("B", "nested", process=1)), processes=2),
    Scenario("login_login", (Actor("A", "login"), Actor("B", "login", process=1)), processes=2),
    Scenario(
        "renew_write_write",
        (Actor("A", "renew"), Actor("B", "write", process=1), Actor("C", "write", process=2)),
        processes=3,
        sampled=1500,
    ),
    Scenario("purge_write", (Actor("A", "purge"), Actor("B", "write"))),
    Scenario("login_purge", (Actor("A", "login"), Actor("B", "purge"))),
    Scenario(
        "login_write_purge",
        (Actor("A", "login"), Actor("B", "write"), Actor("C", "purge")),
        sampled=1500,
    ),
    Scenario("login_signout", (Actor("A", "login"), Actor("B", "signout")), seeds=LOGGED_IN),
    Scenario(
        "signout_two_devices",
        (Actor("A", "signout"), Actor("B", "write"), Actor("C", "write", session="M")),
        seeds=TWO_DEVICES,
        sampled=1500,
    ),
    Scenario("end_session_write", (Actor("A", "end"), Actor("B", "write")), seeds=LOGGED_IN),
    Scenario("end_session_login", (Actor("A", "end"), Actor("B", "login")), seeds=LOGGED_IN),
    Scenario(
        "touch_login", (Actor("A", "read"), Actor("B", "login")), seeds=LOGGED_IN, lifecycle="touch"
    ),
    Scenario(
        "touch_purge", (Actor("A", "read"), Actor("B", "purge")), seeds=LOGGED_IN, lifecycle="touch"
    ),
    Scenario(
        "touch_after_write",
        (Actor("A", "read"), Actor("B", "write")),
        seeds=LOGGED_IN,
        lifecycle="touch_after",
    ),
    Scenario(
        "touch_after_login",
        (Actor("A", "read"), Actor("B", "login")),
        seeds=LOGGED_IN,
        lifecycle="touch_after",
    ),
    Scenario("stream_login", (Actor("A", "stream"), Actor("B", "login", process=1)), processes=2),
    Scenario("stream_new_session", (Actor("A", "stream", session=""),)),
    Scenario("stream_purge", (Actor("A", "stream"), Actor("B", "purge"))),
    Scenario("ws_login", (Actor("A", "ws"), Actor("B", "login", process=1)), processes=2),
    Scenario("ws_signout", (Actor("A", "ws"), Actor("B", "signout")), seeds=LOGGED_IN),
    Scenario("ws_late_login", (Actor("A", "ws_late"), Actor("B", "login", process=1)), processes=2),
    Scenario("rotate_alone", (Actor("A", "rotate"),), seeds=LOGGED_IN, faults=2, rotation=True),
    Scenario(
        "rotate_rotate",
        (Actor("A", "rotate"), Actor("B", "rotate", process=1)),
        processes=2,
        rotation=True,
    ),
    Scenario(
        "rotate_rotate_one_process", (Actor("A", "rotate"), Actor("B", "rotate")), rotation=True
    ),
    Scenario(
        "rotate_write",
        (Actor("A", "rotate"), Actor("B", "write", process=1)),
        processes=2,
        rotation=True,
    ),
    Scenario(
        "rotate_write_one_process", (Actor("A", "rotate"), Actor("B", "write")), rotation=True
    ),
    Scenario(
        "rotate_late_write",
        (Actor("A", "rotate"), Actor("B", "write", process=1)),
        processes=2,
        rotation=True,
        late=(1,),
    ),
    Scenario(
        "rotate_write_purge",
        (Actor("A", "rotate"), Actor("B", "write", process=1), Actor("C", "purge")),
        processes=2,
        rotation=True,
        sampled=1500,
    ),
    Scenario(
        "rotate_signout",
        (Actor("A", "rotate"), Actor("B", "signout")),
        seeds=LOGGED_IN,
        rotation=True,
    ),
    Scenario(
        "cache_read_purge",
        (Actor("A", "read", process=1), Actor("B", "purge")),
        processes=2,
        cached=True,
    ),
    Scenario(
        "cache_write_write",
        (Actor("A", "write"), Actor("B", "write", process=1)),
        processes=2,
        cached=True,
        sampled=1500,
    ),
    Scenario(
        "cache_signout_read",
        (Actor("A", "read", process=1), Actor("B", "signout")),
        seeds=LOGGED_IN,
        processes=2,
        cached=True,
    ),
    Scenario(
        "cache_login_read",
        (Actor("A", "login"), Actor("B", "read", process=1)),
        processes=2,
        cached=True,
    ),
]
