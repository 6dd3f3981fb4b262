"""Least privilege in PostgreSQL: per service, an owner role and a runtime role.

- ``<runtime>_owner`` (NOLOGIN) owns the schema and every table: migrations run as it
  (``SET ROLE``), started by an administrator connection.
- ``<runtime>`` (LOGIN) is what the service connects as: CONNECT on its own database only (the
  database's CONNECT is revoked from PUBLIC), and SELECT/INSERT/UPDATE/DELETE on the tables and
  use of the sequences — never DDL, never another service's database.
"""

from __future__ import annotations

from libs.pg.admin import quote_ident
from libs.pg.pool import Conn


def owner_of(runtime: str) -> str:
    return f"{runtime}_owner"


async def ensure_roles(admin: Conn, *, runtime: str, password: str | None) -> None:
    """Create (or update) the two roles of one service; cluster-wide, so shared by databases.

    Serialised across processes (a transaction lock): two setups changing one role at once
    fail in PostgreSQL with "tuple concurrently updated" (seen with two test workers)."""
    owner = owner_of(runtime)
    async with admin.transaction():
        await admin.execute("SELECT pg_advisory_xact_lock(hashtext('orderflow.roles'))")
        for role, login in ((owner, False), (runtime, True)):
            exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await admin.execute(
                    f"CREATE ROLE {quote_ident(role)} {'LOGIN' if login else 'NOLOGIN'}"
                )
        if password is not None:
            # format() quotes the literal; the statement is not logged by us
            statement = await admin.fetchval(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", runtime, password
            )
            await admin.execute(statement)


async def lock_down_database(admin: Conn, *, database: str, runtime: str) -> None:
    """On the cluster: only the runtime role (and administrators) may connect."""
    db = quote_ident(database)
    await admin.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    await admin.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {quote_ident(runtime)}")


async def prepare_schema(conn: Conn, *, runtime: str) -> None:
    """Inside the service's database, as an administrator: the owner owns, the runtime uses."""
    owner = quote_ident(owner_of(runtime))
    rt = quote_ident(runtime)
    await conn.execute(f"ALTER SCHEMA public OWNER TO {owner}")
    for table in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1",
        owner_of(runtime),
    ):
        await conn.execute(f"ALTER TABLE public.{quote_ident(table['tablename'])} OWNER TO {owner}")
    await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {rt}")


async def grant_runtime(conn: Conn, *, runtime: str) -> None:
    """After migrations: the runtime role reads and writes rows, nothing more."""
    owner = quote_ident(owner_of(runtime))
    rt = quote_ident(runtime)
    await conn.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {rt}"
    )
    await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {rt}")
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {rt}"
    )
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {rt}"
    )
