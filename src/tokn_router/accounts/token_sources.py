"""Where a credential already is: ``tokn-router import --from gh|copilot-plugin|env``.

Where each tool keeps its token (the places gh and the Copilot editor plugins
write, in the order they are tried):

* ``gh``: ``$GH_TOKEN``, ``$GITHUB_TOKEN``, then ``hosts.yml`` in
  ``$GH_CONFIG_DIR``, ``$XDG_CONFIG_HOME/gh``, ``~/.config/gh`` (top-level
  ``oauth_token`` or ``users.<name>.oauth_token``), then ``gh auth token``.
* ``copilot-plugin``: ``github-copilot/apps.json``, ``hosts.json`` and the newer
  ``auth.db`` (SQLite; plaintext ``ghu_`` token, or an encrypted blob we explain)
  under ``$XDG_CONFIG_HOME`` or ``~/.config``.
* ``env``: ``--env-var NAME``, else ``GH_COPILOT_TOKEN`` / ``GITHUB_TOKEN`` for
  Copilot and ``ZAI_API_KEY`` for the Z.ai providers.

Nothing here touches the network: each source's files are read defensively,
every failure is one line naming the file. Verifying and storing what is found
is :mod:`tokn_router.accounts.importers`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from tokn_router.accounts.providers import github as gh
from tokn_router.errors import AccountError, UsageError

Source = Literal["gh", "copilot-plugin", "env"]
COPILOT = "github-copilot"

# A usable GitHub token: gho_/ghu_/ghp_/… or a fine-grained PAT.
_GITHUB_TOKEN_RE = re.compile(r"^(?:gh[oupsr]_[A-Za-z0-9_]+|github_pat_[A-Za-z0-9_]+)$")
_PRINTABLE_RE = re.compile(r"^[\x21-\x7e]+$")


class TokenSourceError(AccountError):
    """A token file or variable exists but is not in a shape we can read."""


class NoTokenError(AccountError):
    """No credential was found where the chosen source keeps it."""


@dataclass(frozen=True, slots=True)
class FoundToken:
    token: str
    source: str  # where it came from, for messages ("$GH_TOKEN", "…/hosts.yml")
    user: str | None = None  # the login the source names, if any


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _check_token(value: str, source: str) -> str:
    token = value.strip()
    if not token:
        raise TokenSourceError(f"{source}: the token is empty")
    if not _PRINTABLE_RE.match(token):
        raise TokenSourceError(
            f"{source}: unexpected shape: the value is not a token "
            "(it contains spaces or control characters)"
        )
    return token


def github_hosts(github_url: str) -> list[str]:
    """Host names to look up in token files: the configured GitHub host, then github.com."""
    host = (urlsplit(github_url).hostname or "").lower()
    hosts = [host] if host and host not in ("127.0.0.1", "localhost", "::1") else []
    if "github.com" not in hosts:
        hosts.append("github.com")
    return hosts


# ------------------------------------------------------------------------------ gh


def gh_config_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """``$GH_CONFIG_DIR``, ``$XDG_CONFIG_HOME/gh``, ``~/.config/gh`` (in that order)."""
    e = _env(env)
    dirs: list[Path] = []
    if e.get("GH_CONFIG_DIR"):
        dirs.append(Path(e["GH_CONFIG_DIR"]).expanduser())
    if e.get("XDG_CONFIG_HOME"):
        dirs.append(Path(e["XDG_CONFIG_HOME"]).expanduser() / "gh")
    dirs.append(_home(e) / ".config" / "gh")
    return list(dict.fromkeys(dirs))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise TokenSourceError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise TokenSourceError(f"{path}: cannot read: {e.strerror}") from None


def read_gh_hosts(path: Path, hosts: list[str]) -> FoundToken | None:
    """A token from gh's ``hosts.yml``; ``None`` when it keeps the token in the keyring."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise TokenSourceError(f"{path}{where}: not valid YAML ({problem})") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TokenSourceError(f"{path}: unexpected shape: expected a mapping of host names")
    for host in hosts:
        entry = data.get(host)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise TokenSourceError(f"{path}: unexpected shape: '{host}' is not a mapping")
        active = entry.get("user")
        token = entry.get("oauth_token")
        if token is not None:
            if not isinstance(token, str):
                raise TokenSourceError(
                    f"{path}: unexpected shape: '{host}.oauth_token' is not a string"
                )
            return FoundToken(
                _check_token(token, str(path)),
                f"{path} ({host})",
                active if isinstance(active, str) else None,
            )
        users = entry.get("users")
        if users is None:
            continue
        if not isinstance(users, dict):
            raise TokenSourceError(f"{path}: unexpected shape: '{host}.users' is not a mapping")
        names = [active] if isinstance(active, str) and active in users else []
        names += [n for n in users if n not in names]
        for name in names:
            u = users[name]
            if u is None:
                continue
            if not isinstance(u, dict):
                raise TokenSourceError(
                    f"{path}: unexpected shape: '{host}.users.{name}' is not a mapping"
                )
            tok = u.get("oauth_token")
            if tok is None:
                continue
            if not isinstance(tok, str):
                raise TokenSourceError(
                    f"{path}: unexpected shape: '{host}.users.{name}.oauth_token' is not a string"
                )
            return FoundToken(
                _check_token(tok, str(path)), f"{path} ({host}, user {name})", str(name)
            )
    return None


def gh_auth_token(host: str, env: Mapping[str, str] | None = None) -> FoundToken | None:
    """``gh auth token --hostname HOST`` when ``gh`` is on PATH (reads the keyring)."""
    e = _env(env)
    exe = shutil.which("gh", path=e.get("PATH"))
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "auth", "token", "--hostname", host],
            capture_output=True,
            text=True,
            timeout=20,
            env=dict(e),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NoTokenError(f"`gh auth token` failed: {err}") from None
    if proc.returncode != 0:
        return None
    out = proc.stdout.strip()
    if not out:
        return None
    if "\n" in out:
        raise TokenSourceError(
            "`gh auth token` printed more than one line; expected a single token"
        )
    return FoundToken(_check_token(out, "`gh auth token`"), "`gh auth token`")


def find_gh_token(hosts: list[str], env: Mapping[str, str] | None = None) -> FoundToken:
    e = _env(env)
    for var in ("GH_TOKEN", "GITHUB_TOKEN"):
        if e.get(var):
            return FoundToken(_check_token(e[var], f"${var}"), f"${var}")
    checked = ["$GH_TOKEN", "$GITHUB_TOKEN"]
    for d in gh_config_dirs(e):
        path = d / "hosts.yml"
        found = read_gh_hosts(path, hosts)
        if found is not None:
            return found
        checked.append(str(path))
    for host in hosts:
        found = gh_auth_token(host, e)
        if found is not None:
            return found
    gh_note = (
        "`gh auth token` gave none"
        if shutil.which("gh", path=e.get("PATH"))
        else "`gh` is not on PATH (gh keeps tokens in the OS keyring by default)"
    )
    raise NoTokenError(f"no GitHub token found: checked {', '.join(checked)}; {gh_note}")


# ------------------------------------------------------------------ copilot plugin


def copilot_config_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """``$XDG_CONFIG_HOME/github-copilot``, then ``~/.config/github-copilot``."""
    e = _env(env)
    dirs: list[Path] = []
    if e.get("XDG_CONFIG_HOME"):
        dirs.append(Path(e["XDG_CONFIG_HOME"]).expanduser() / "github-copilot")
    dirs.append(_home(e) / ".config" / "github-copilot")
    return list(dict.fromkeys(dirs))


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenSourceError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_plugin_json(path: Path, hosts: list[str]) -> FoundToken | None:
    """``apps.json`` (``"github.com:<client id>"`` keys) or ``hosts.json`` (``"github.com"``)."""
    data = _read_json(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TokenSourceError(f"{path}: unexpected shape: expected a JSON object keyed by host")
    for host in hosts:
        keys = [k for k in data if k == host or k.startswith(host + ":")]
        # prefer the Copilot app's own entry when several apps are listed
        keys.sort(key=lambda k: k != f"{host}:{gh.CLIENT_ID}")
        for key in keys:
            entry = data[key]
            if not isinstance(entry, dict):
                raise TokenSourceError(f"{path}: unexpected shape: '{key}' is not an object")
            token = entry.get("oauth_token")
            if not isinstance(token, str):
                raise TokenSourceError(
                    f"{path}: unexpected shape: '{key}' has no string 'oauth_token'"
                )
            user = entry.get("user")
            return FoundToken(
                _check_token(token, str(path)),
                f"{path} ({key})",
                user if isinstance(user, str) else None,
            )
    return None


ENCRYPTED_AUTH_DB = (
    "the token in {path} is encrypted (newer Copilot language servers encrypt it with "
    "AES-256-GCM and keep the key in the OS keychain, service 'copilot-language-server'), "
    "so tokn-router cannot read it; run `tokn-router login` instead, or put a plaintext "
    "ghu_ token in $GH_COPILOT_TOKEN and run `tokn-router import --from env`"
)


def read_auth_db(path: Path, hosts: list[str]) -> FoundToken | None:
    """The plaintext token in ``auth.db`` (``oauth_tokens.token_ciphertext``)."""
    if not path.exists():
        return None
    try:
        uri = path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5)
    except sqlite3.Error as e:
        raise TokenSourceError(f"{path}: cannot open the SQLite database: {e}") from None
    try:
        for host in hosts:
            try:
                row = conn.execute(
                    "SELECT token_ciphertext FROM oauth_tokens WHERE auth_authority = ? LIMIT 1",
                    (host,),
                ).fetchone()
            except sqlite3.DatabaseError as e:
                msg = str(e)
                if "no such table" in msg or "no such column" in msg:
                    raise TokenSourceError(
                        f"{path}: unexpected shape: {msg} (expected table "
                        "oauth_tokens(auth_authority, token_ciphertext))"
                    ) from None
                raise TokenSourceError(f"{path}: not a readable SQLite database ({msg})") from None
            if row is None:
                continue
            value = row[0]
            if isinstance(value, bytes):
                try:
                    value = value.decode("ascii")
                except UnicodeDecodeError:
                    raise TokenSourceError(ENCRYPTED_AUTH_DB.format(path=path)) from None
            if not isinstance(value, str) or not _GITHUB_TOKEN_RE.match(value.strip()):
                raise TokenSourceError(ENCRYPTED_AUTH_DB.format(path=path))
            return FoundToken(value.strip(), f"{path} ({host})")
    finally:
        conn.close()
    return None


def find_copilot_plugin_token(hosts: list[str], env: Mapping[str, str] | None = None) -> FoundToken:
    checked: list[str] = []
    for d in copilot_config_dirs(env):
        for name, reader in (
            ("apps.json", read_plugin_json),
            ("hosts.json", read_plugin_json),
            ("auth.db", read_auth_db),
        ):
            path = d / name
            found = reader(path, hosts)
            if found is not None:
                return found
            checked.append(str(path))
    raise NoTokenError(
        f"no Copilot plugin token found (checked {', '.join(checked)}); sign in with a "
        "Copilot editor plugin first, or run `tokn-router login`"
    )


# --------------------------------------------------------------------------- env


def default_env_vars(provider: str) -> tuple[str, ...]:
    if provider == COPILOT:
        return ("GH_COPILOT_TOKEN", "GITHUB_TOKEN")
    if provider.startswith("zhipuai"):
        return ("ZAI_API_KEY", "ZHIPUAI_API_KEY")
    return ("ZAI_API_KEY",)


def find_env_token(
    provider: str, env_var: str | None = None, env: Mapping[str, str] | None = None
) -> FoundToken:
    e = _env(env)
    names = (env_var,) if env_var else default_env_vars(provider)
    for name in names:
        value = e.get(name)
        if value:
            return FoundToken(_check_token(value, f"${name}"), f"${name}")
    shown = " or ".join(f"${n}" for n in names)
    raise NoTokenError(f"{shown} is not set" if len(names) == 1 else f"neither {shown} is set")


def find_token(
    source: Source,
    provider: str,
    *,
    github_url: str,
    env_var: str | None = None,
    env: Mapping[str, str] | None = None,
) -> FoundToken:
    """Discover a credential for ``provider`` from ``source`` (no network)."""
    if source != "env" and provider != COPILOT:
        raise UsageError(f"--from {source} only finds GitHub tokens; use --from env for {provider}")
    if env_var and source != "env":
        raise UsageError("--env-var only applies to --from env")
    hosts = github_hosts(github_url)
    if source == "gh":
        return find_gh_token(hosts, env)
    if source == "copilot-plugin":
        return find_copilot_plugin_token(hosts, env)
    return find_env_token(provider, env_var, env)
