"""PostgreSQL: pools and connections, migrations, per-key locks, error translation."""

from libs.pg.keyset import Cursor, page_of
from libs.pg.locks import KeyLock
from libs.pg.migrations import Migration
from libs.pg.migrations import apply as apply_migrations
from libs.pg.migrations import load as load_migrations
from libs.pg.pool import Conn, connect, connection, create_pool, tables

__all__ = [
    "Conn",
    "Cursor",
    "KeyLock",
    "Migration",
    "apply_migrations",
    "connect",
    "connection",
    "create_pool",
    "load_migrations",
    "page_of",
    "tables",
]
