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
from urllib.parse import urlsplit, urlunsplit

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from libs.secrets import read_secret, user_of, with_credentials
from libs.settings import Settings
from orderflow.system import SERVICES

_DSN_KEYS = {
    service: f"ORDERFLOW_{service.removesuffix('_svc').upper()}_DSN" for service in SERVICES
}
_NEVER = ("PASSWORD", "SECRET", "ADMIN", "TOKEN")


def service_environment(
    env: Mapping[str, str], service: str, *, secrets_root: Path
) -> dict[str, str]:
    """The environment for one process of ``service``; writes its secrets under
    ``secrets_root`` (a directory of the caller's, removed by the caller)."""
    settings = settings_from(env)
    if not settings.amqp_service_users:
        return dict(env)  # the operator chose one account for everything: nothing to confine
    own = {
        key: value
        for key, value in env.items()
        if not any(word in key.upper() for word in _NEVER)
        and not (key in _DSN_KEYS.values() and key != _DSN_KEYS[service])
        and key != "ORDERFLOW_SECRETS_DIR"
    }
    user = settings.broker_user(service)
    own["ORDERFLOW_AMQP_URL"] = _without_password(with_credentials(settings.amqp_url, user=user))
    operator = settings.operator_user()
    if operator:
        own["ORDERFLOW_AMQP_OPERATOR_USER"] = operator
    own[_DSN_KEYS[service]] = _without_password(settings.dsn_for(service))
    directory = Path(tempfile.mkdtemp(prefix=f"{service}-", dir=secrets_root))
    os.chmod(directory, 0o700)
    for name in (f"amqp_{user}", f"pg_{user_of(settings.dsn_for(service))}"):
        value = read_secret(
            value=None, file=None, secrets_dir=settings.secrets_dir_of(service), name=name
        ) or read_secret(value=None, file=None, secrets_dir=settings.secrets_dir, name=name)
        if value is not None:
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
    own["ORDERFLOW_SECRETS_DIR"] = str(directory)
    own["ORDERFLOW_SECRETS_PER_SERVICE"] = "false"
    return own


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings as ``env`` says (not this process's own environment)."""
    lowered = {k.lower(): v for k, v in env.items()}

    class FromMapping(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            source = EnvSettingsSource(settings_cls)
            source.env_vars = lowered
            return (source,)

    return FromMapping()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))
