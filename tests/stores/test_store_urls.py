"""A store URL that cannot work fails at construction, saying what to write (issue 28 item 14).

Before, ``PostgresSessionStore.from_dsn("postgress://...")`` and
``SQLiteSessionStore("sqlite:///s.db")`` were accepted, and then every request was a 503.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionware.stores import (
    MemcachedSessionStore,
    MySQLSessionStore,
    PostgresSessionStore,
    RedisSessionStore,
    SQLiteSessionStore,
)


def redis_cluster(url: str) -> Any:
    return RedisSessionStore.from_url(url, cluster=True)


@pytest.mark.parametrize(
    ("build", "url", "says"),
    [
        (
            PostgresSessionStore.from_dsn,
            "postgress://app:s3cret@db/app",
            "has the scheme 'postgress': did you mean postgres://?",
        ),
        (
            PostgresSessionStore.from_dsn,
            "mysql://app:s3cret@db/app",
            "postgresql:// or postgres://",
        ),
        (PostgresSessionStore.from_dsn, "host=db dbname=app", "this one has no scheme"),
        (
            MySQLSessionStore.from_dsn,
            "mysq://app:s3cret@db/app",
            "has the scheme 'mysq': did you mean mysql://?",
        ),
        (MySQLSessionStore.from_dsn, "postgresql://app:s3cret@db/app", "mysql:// or mariadb://"),
        (
            RedisSessionStore.from_url,
            "redis2://:s3cret@localhost:6379/0",
            "has the scheme 'redis2': did you mean redis://?",
        ),
        (RedisSessionStore.from_url, "localhost:6379", "redis:// or rediss:// or unix://"),
        (redis_cluster, "rediss2://:s3cret@node1:7000", "did you mean rediss://?"),
        (
            MemcachedSessionStore.from_url,
            "memcache://cache1:11211",
            "has the scheme 'memcache': did you mean memcached://?",
        ),
        (MemcachedSessionStore.from_url, "cache1:11211", "memcached://host:11211"),
    ],
)
def test_a_url_of_the_wrong_scheme_fails_at_construction(
    build: Callable[[str], Any], url: str, says: str
) -> None:
    with pytest.raises(ValueError) as info:
        build(url)
    message = str(info.value)
    assert says in message, message
    assert re.search(r"needs a (URL|DSN) like", message), message
    assert "s3cret" not in message  # never the rest of the URL: it may hold a password


@pytest.mark.parametrize(
    ("path", "write"),
    [
        ("sqlite:///s.db", "SQLiteSessionStore('s.db')"),
        ("sqlite:////var/lib/app/s.db", "SQLiteSessionStore('/var/lib/app/s.db')"),
        (Path("sqlite:///s.db"), "SQLiteSessionStore('s.db')"),  # a Path keeps one slash
        ("SQLite://s.db", "SQLiteSessionStore('s.db')"),
        ("postgresql://db/app", "SQLiteSessionStore('sessions.db') or an absolute path"),
    ],
)
def test_sqlite_takes_a_path_not_a_url(path: str | Path, write: str) -> None:
    with pytest.raises(ValueError, match="takes the path of the database file, not a URL") as info:
        SQLiteSessionStore(path)
    assert f"write {write}" in str(info.value)


def test_good_urls_and_paths_are_still_accepted(tmp_path: Path) -> None:
    for dsn in ("postgresql://app@db/app", "postgres://app@db/app", "POSTGRESQL://db/app"):
        PostgresSessionStore.from_dsn(dsn)
    for dsn in ("mysql://app@db/app", "mariadb://app:pw@db:3307/app"):
        MySQLSessionStore.from_dsn(dsn)
    for url in ("redis://localhost", "rediss://localhost:6380/1", "unix:///tmp/redis.sock"):
        RedisSessionStore.from_url(url)
    MemcachedSessionStore.from_url("memcached://a:11211,b:11211")
    for path in (tmp_path / "s.db", str(tmp_path / "sqlite-sessions.db"), ":memory:", "C:/s.db"):
        SQLiteSessionStore(path)
