"""The two databases the ledger runs on, and how a URL names one.

SQLite is the embedded default (one file, WAL, a full fsync at each
commit); PostgreSQL is for scale.  The SQL the ledger writes is the same
for both but for the few differences below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_DB_URL = "sqlite:///peerledger.db"


@dataclass(frozen=True)
class Dialect:
    """The few SQL differences between SQLite and PostgreSQL that we use."""

    name: str
    param: str  # placeholder
    blob: str
    # Money columns hold sums of amounts up to 2^63-1, which may exceed 64
    # bits: TEXT (decimal) on SQLite, NUMERIC on PostgreSQL, never float.
    big_int: str
    serial_pk: str
    # Appended to the definition of a table of small rows under random keys:
    # SQLite then stores it in its primary key's B-tree (WITHOUT ROWID), not
    # a rowid table plus an index on the key, so an upsert finds, and a
    # commit writes, one page instead of two.  PostgreSQL's tables are
    # always heap plus index.
    clustered: str

    def sql(self, statement: str) -> str:
        return statement if self.param == "?" else statement.replace("?", "%s")


SQLITE = Dialect("sqlite", "?", "BLOB", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT", " WITHOUT ROWID")
POSTGRES = Dialect("postgresql", "%s", "BYTEA", "NUMERIC", "BIGSERIAL PRIMARY KEY", "")



@dataclass(frozen=True)
class DbUrl:
    dialect: Dialect
    sqlite_path: str = ""
    pg: dict[str, Any] | None = None

    @classmethod
    def parse(cls, url: str) -> "DbUrl":
        u = urlparse(url)
        if u.scheme == "sqlite":
            # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy.
            path = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
            if not path:
                raise ValueError(f"bad SQLite URL {url!r}: use sqlite:///FILE")
            return cls(SQLITE, sqlite_path=path)
        if u.scheme in ("postgresql", "postgres"):
            return cls(
                POSTGRES,
                pg={
                    "dbname": unquote(u.path.lstrip("/")) or "postgres",
                    "host": u.hostname or "127.0.0.1",
                    "port": u.port or 5432,
                    "user": unquote(u.username or os.environ.get("PGUSER", "postgres")),
                    "password": unquote(u.password or os.environ.get("PGPASSWORD", "")),
                },
            )
        raise ValueError(f"unsupported database URL {url!r} (sqlite:///FILE or postgresql://…)")


