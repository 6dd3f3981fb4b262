"""What a service process is given: its own credentials and nothing else.

The operator's environment holds the broker administrator's URL and password, the PostgreSQL
superuser DSN and a secrets directory with every service's passwords. A service needs none of
that: :func:`service_environment` turns the operator's environment into one service's, with

- the broker URL naming the service's own user, without a password, and the operator's login
  (never its password) so the service knows whose replays to accept;
- its own database DSN only, without the administrator's;
- a private secrets directory holding copies of its own two secrets (broker and database);
- no variable that carries a password, a secret or an administrator's credentials.

``orderflow up`` (the supervisor) starts every service this way; compose does the same with one
secrets volume per service.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from libs.secrets import read_secret, user_of, with_credentials, without_password
from libs.settings import Settings
from orderflow.system import SYSTEM

_DSN_KEYS = SYSTEM.dsn_envs
# What a service reads besides its URL, DSN and secrets directory (set below): nothing that can
# hold a credential. Everything else of orderflow's is left out.
_SERVICE_SETTINGS = (
    "ORDERFLOW_AMQP_USER_PREFIX",
    "ORDERFLOW_AMQP_SERVICE_USERS",
    "ORDERFLOW_AMQP_CA_FILE",
    "ORDERFLOW_LOG_",
    "ORDERFLOW_RELAY__",
    "ORDERFLOW_CONSUMER__",
    "ORDERFLOW_SAGA__",
    "ORDERFLOW_ORDER__",
    "ORDERFLOW_POOL_SIZE",
    "ORDERFLOW_JAEGER_URL",
    "ORDERFLOW_READY_FILE",
    "ORDERFLOW_FAULTS",
    "ORDERFLOW_UVLOOP",
    "ORDERFLOW_METRICS",
    "ORDERFLOW_HTTP_",
    "ORDERFLOW_RETENTION__",
)
# Outside orderflow's own variables, those that name credentials or PostgreSQL's defaults.
_FOREIGN_SECRETS = ("PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "DATABASE_URL")


def service_environment(
    env: Mapping[str, str], service: str, *, secrets_root: Path
) -> dict[str, str]:
    """The environment for one process of ``service``; writes its secrets under
    ``secrets_root`` (a directory of the caller's, removed by the caller)."""
    settings = settings_from(env)
    own = {key: value for key, value in env.items() if _passes(key)}
    if settings.amqp_service_users:
        user = settings.broker_user(service)
        own["ORDERFLOW_AMQP_URL"] = without_password(with_credentials(settings.amqp_url, user=user))
        operator = settings.operator_user()
        if operator:
            own["ORDERFLOW_AMQP_OPERATOR_USER"] = operator
        names = [f"amqp_{user}"]
    else:  # the operator chose one broker account for everything; the database stays confined
        own["ORDERFLOW_AMQP_URL"] = settings.amqp_url
        names = []
    own["ORDERFLOW_AMQP_SERVICE_USERS"] = str(settings.amqp_service_users).lower()
    own[_DSN_KEYS[service]] = without_password(settings.dsn_for(service))
    names.append(f"pg_{user_of(settings.dsn_for(service))}")
    directory = Path(tempfile.mkdtemp(prefix=f"{service}-", dir=secrets_root))
    os.chmod(directory, 0o700)
    for name in names:
        value = read_secret(
            value=None, file=None, secrets_dir=settings.secrets_dir_of(service), name=name
        )
        if value is not None:
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
    own["ORDERFLOW_SECRETS_DIR"] = str(directory)
    own["ORDERFLOW_SECRETS_PER_SERVICE"] = "false"
    return own


def _passes(key: str) -> bool:
    upper = key.upper()
    if upper.startswith("ORDERFLOW_"):
        return upper.startswith(_SERVICE_SETTINGS)
    return not upper.startswith("PG") and not any(word in upper for word in _FOREIGN_SECRETS)


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings as ``env`` says (not this process's own environment)."""
    return Settings.of(env)
