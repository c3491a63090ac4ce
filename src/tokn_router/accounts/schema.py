"""The config schema: msgspec Structs, their defaults and the JSON Schema.

The single source for validation (:mod:`tokn_router.accounts.config` converts the
TOML into :class:`Config`), for the key paths of ``config get/set`` (walked by
:func:`field_type`) and for the snapshot in ``schemas/config/``. Nothing here
reads files or knows the provider registry, so every layer can import it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

from tokn_router.errors import ConfigError

RouteMode = Literal["route", "passthrough", "switch"]
InitiatorMode = Literal["auto", "user", "agent", "always_user", "always_agent"]


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


class ServerConfig(_Base):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 4141
    route_mode: RouteMode = "route"
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024 * 1024
    shutdown_grace_secs: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # SSE comment sent while upstream is silent, so a client that went away is noticed
    sse_keepalive_secs: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    # Client keys (``tokn-router keys``): unset = required on a non-loopback bind and
    # optional on loopback; "keys" requires them everywhere; "none" never looks at
    # them (an open server: anyone who can connect spends the accounts).
    auth: Literal["none", "keys"] | None = None


class PoolConfig(_Base):
    strategy: Literal["round_robin"] = "round_robin"
    failure_cooldown_secs: Annotated[int, msgspec.Meta(ge=0)] = 60
    # a conversation stays on its account until it has been idle this long (0: off)
    sticky_idle_secs: Annotated[int, msgspec.Meta(ge=0)] = 3600
    # a used-up window or quota whose reset upstream did not say: shut this long
    window_cooldown_secs: Annotated[int, msgspec.Meta(ge=1)] = 3600


class UsageConfig(_Base):
    enabled: bool = True
    path: str | None = None


class OutboundProxyConfig(_Base):
    """``[proxy]``: the outbound proxy used for every upstream call."""

    url: str | None = None
    system: bool = False
    no_proxy: list[str] = msgspec.field(default_factory=list)


class ProxyModeConfig(_Base):
    """``[proxy_mode]``: the MITM forward proxy listener."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 4142
    route_mode: RouteMode = "route"
    ca_dir: str | None = None
    intercept_hosts: list[str] = msgspec.field(default_factory=list)
    passthrough_hosts: list[str] = msgspec.field(default_factory=list)
    provider_modes: dict[str, RouteMode] = msgspec.field(default_factory=dict)


class UpstreamConfig(_Base):
    """Timeouts of upstream calls; the read timeout applies between chunks."""

    connect_timeout_secs: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    read_timeout_secs: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class GithubConfig(_Base):
    url: str | None = None
    api_url: str | None = None


# a header value: printable ASCII, no line breaks
HeaderValue = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[\x20-\x7e]+$")]


class IdentityConfig(_Base):
    """``[identity]``: the editor identity sent to Copilot, over the packaged set.

    Unset keys keep the packaged values (one consistent VS Code / Copilot Chat
    release, see ``tokn_router/data/identity.toml``); ``[accounts.settings]``
    still win per account. Set these to follow a newer release without
    upgrading tokn-router; a running daemon picks an edit up.
    """

    editor_version: HeaderValue | None = None
    editor_plugin_version: HeaderValue | None = None
    user_agent: HeaderValue | None = None
    copilot_integration_id: HeaderValue | None = None
    openai_intent: HeaderValue | None = None
    github_api_version: HeaderValue | None = None
    # the token exchange's X-GitHub-Api-Version (versioned apart from the API)
    token_api_version: HeaderValue | None = None
    # X-VSCode-User-Agent-Library-Version
    user_agent_library: HeaderValue | None = None
    # VScode-SessionId / VScode-MachineId / Editor-Device-Id: stable per account,
    # derived from a random id in the state dir; false sends none of them
    device_ids: bool = True


class AccountSettings(_Base):
    """Identity headers sent upstream; unset values track the current defaults."""

    editor_version: str | None = None
    editor_plugin_version: str | None = None
    user_agent: str | None = None
    copilot_integration_id: str | None = None
    openai_intent: str | None = None
    github_api_version: str | None = None
    initiator_mode: InitiatorMode = "auto"


class Account(_Base):
    id: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[A-Za-z0-9._@-]+$")]
    provider: str = "github-copilot"
    auth_type: Literal["bearer"] = "bearer"
    enabled: bool = True
    refresh_token: str | None = None
    access_token: str | None = None
    access_token_expires_at: int | None = None
    # the API base the token exchange named (endpoints.api), stored with the token
    api_base_url: str | None = None
    refresh_url: str | None = None
    api_key: str | None = None
    base_url: str | None = None
    # below this share left in a window, the account serves only as a last resort
    reserve_percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0.0
    settings: AccountSettings = msgspec.field(default_factory=AccountSettings)


class Config(_Base):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    proxy: OutboundProxyConfig = msgspec.field(default_factory=OutboundProxyConfig)
    proxy_mode: ProxyModeConfig = msgspec.field(default_factory=ProxyModeConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    github: GithubConfig = msgspec.field(default_factory=GithubConfig)
    identity: IdentityConfig = msgspec.field(default_factory=IdentityConfig)
    model_aliases: dict[str, str] = msgspec.field(default_factory=dict)
    accounts: list[Account] = msgspec.field(default_factory=list)

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config, as snapshotted in ``schemas/config/``."""
    schema = msgspec.json.schema(Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tokn-router config"
    return schema


# --------------------------------------------------------------------- key paths


def unwrap(tp: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``; any other type as it is."""
    if get_origin(tp) is Annotated:
        return get_args(tp)[0]
    return tp


def field_type(root: type, dotted: str) -> Any:
    """The annotated type at a dotted key path of a Struct, or ConfigError."""
    tp: Any = root
    walked: list[str] = []
    for part in dotted.split("."):
        tp = unwrap(tp)
        walked.append(part)
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            hints = get_type_hints(tp, include_extras=True)
            if part not in hints:
                raise ConfigError(f"unknown config key '{'.'.join(walked)}'")
            tp = hints[part]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            raise ConfigError(f"unknown config key '{'.'.join(walked)}'")
    return tp


def is_struct(tp: Any) -> bool:
    base = unwrap(tp)
    return isinstance(base, type) and issubclass(base, msgspec.Struct)


def type_name(tp: Any) -> str:
    """A field type in words, for error messages (``list of string``)."""
    base = unwrap(tp)
    origin = get_origin(base)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(base))
    if origin is list:
        return f"list of {type_name(get_args(base)[0])}"
    if origin is dict:
        return "table"
    if origin is not None:
        return " or ".join(type_name(a) for a in get_args(base) if a is not type(None))
    return {str: "string", int: "integer", bool: "boolean", float: "number"}.get(
        base, getattr(base, "__name__", str(base))
    )


__all__ = [
    "Account",
    "AccountSettings",
    "Config",
    "GithubConfig",
    "HeaderValue",
    "IdentityConfig",
    "InitiatorMode",
    "OutboundProxyConfig",
    "PoolConfig",
    "ProxyModeConfig",
    "RouteMode",
    "ServerConfig",
    "UpstreamConfig",
    "UsageConfig",
    "field_type",
    "is_struct",
    "json_schema",
    "type_name",
    "unwrap",
]
