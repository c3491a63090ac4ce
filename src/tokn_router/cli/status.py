"""``tokn-router status``: what the running daemon says, on one screen.

It reads ``/healthz`` from the configured API address (or ``--host`` /
``--port``) and today's rows of the usage ledger. ``tokn-router doctor``
(:mod:`tokn_router.cli.doctor`) checks the set-up itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokn_router.accounts import config
from tokn_router.accounts.config import Config
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Host, Json, Port
from tokn_router.errors import ToknError

# httpx, trio, the GitHub client and the CA store are imported inside the commands:
# every other command (and --help) starts faster without them.

JSON_FORMAT = 1
PROBE_TIMEOUT_SECS = 3.0  # the daemon is local: it answers at once or not at all


# ------------------------------------------------------------------ the daemon


def _url_host(host: str) -> str:
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host else host


def api_url(cfg: Config, host: str | None = None, port: int | None = None) -> str:
    """Where clients reach the API of ``cfg`` (a wildcard bind becomes loopback)."""
    h = _url_host(host or cfg.server.host)
    return f"http://{h}:{cfg.server.port if port is None else port}"


@dataclass
class Probe:
    url: str
    health: dict[str, Any] | None = None
    error: str | None = None  # why there is no health
    foreign: bool = False  # something answered, but not tokn-router

    @property
    def running(self) -> bool:
        return self.health is not None


def probe(url: str, timeout: float = PROBE_TIMEOUT_SECS) -> Probe:
    """GET ``url``/healthz directly (never through a proxy: it is ours, and local)."""
    import httpx2 as httpx

    try:
        with httpx.Client(trust_env=False, timeout=timeout) as client:
            resp = client.get(url + "/healthz")
    except httpx.TimeoutException:
        return Probe(url, error=f"{url} did not answer within {timeout:g}s")
    except httpx.HTTPError as e:
        reason = str(e) or type(e).__name__
        if "refused" in reason.lower():
            reason = "connection refused"
        return Probe(url, error=f"nothing answers at {url}: {reason}")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict) or "accounts" not in body:
        return Probe(
            url,
            error=f"{url} answered HTTP {resp.status_code}, but not as tokn-router",
            foreign=True,
        )
    return Probe(url, health=body)


def span(secs: float) -> str:
    secs = int(secs)
    if secs < 120:
        return f"{secs}s"
    if secs < 2 * 3600:
        return f"{secs // 60}m"
    if secs < 2 * 86400:
        return f"{secs // 3600}h {secs % 3600 // 60}m"
    return f"{secs // 86400}d"


# ------------------------------------------------------------------- the ledger


def _today_start() -> int:
    t = time.localtime()
    return int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1)))


def today_usage(cfg: Config, cfg_path: Path) -> tuple[Any, str | None]:
    """(today's report, None) or (None, why there is none)."""
    # imported here: `tokn_router.usage` pulls in trio
    from tokn_router.usage import queries
    from tokn_router.usage.schema import NoDatabaseError, open_readonly

    db = config.usage_db_path(cfg, cfg_path)
    try:
        conn = open_readonly(db)
    except NoDatabaseError:
        return None, f"no usage recorded yet ({db})"
    except ToknError as e:
        return None, str(e)
    try:
        return queries.query(conn, db, since_ts=_today_start()), None
    finally:
        conn.close()


def _usage_line(report: Any, why: str | None) -> str:
    if report is None:
        return f"today:     {why}"
    t = report.totals
    errors = f", {t.errors:,} error{'s' if t.errors != 1 else ''}" if t.errors else ""
    return (
        f"today:     {t.requests:,} request{'s' if t.requests != 1 else ''}{errors}, "
        f"{t.input_tokens:,} input / {t.output_tokens:,} output tokens"
    )


# ---------------------------------------------------------------------- status


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def window_detail(a: dict[str, Any], now: float) -> str:
    """The account's rate windows from /healthz, e.g. ``weekly 40% left, resets in 2d``."""
    windows = a.get("windows")
    if not isinstance(windows, dict):
        return ""
    parts = []
    for name, w in sorted(windows.items()):
        if not isinstance(w, dict):
            continue
        if isinstance(w.get("exhausted_until"), (int, float)):
            text = f"{name} used up for {span(max(0, w['exhausted_until'] - now))}"
        elif w.get("unlimited"):
            text = f"{name} unlimited"
        elif isinstance(w.get("remaining_pct"), (int, float)):
            text = f"{name} {w['remaining_pct']:g}% left"
        else:
            continue
        reset = w.get("reset_at")
        if isinstance(reset, (int, float)) and reset > now and "used up" not in text:
            text += f", resets in {span(reset - now)}"
        parts.append(text)
    return "; ".join(parts)


def account_detail(a: dict[str, Any], now: float) -> str:
    detail = _state_detail(a, now)
    windows = window_detail(a, now)
    return f"{detail} [{windows}]" if windows else detail


def _state_detail(a: dict[str, Any], now: float) -> str:
    state = a.get("state", "?")
    if state in ("cooling_down", "quota_exhausted"):
        left = a.get("retry_after_secs")
        if left is None and isinstance(a.get("cooldown_until"), (int, float)):
            left = a["cooldown_until"] - now
        why = f": {a['last_error']}" if a.get("last_error") else ""
        return f"retry in {span(max(0, left or 0))}{why}"
    if state == "disabled":
        return str(a.get("disabled_reason") or "disabled")
    if a.get("last_error"):
        return str(a["last_error"])
    return f"{a.get('models', 0)} models"


def _expiry(ts: Any, now: float) -> str:
    if not isinstance(ts, (int, float)) or not ts:
        return "-"
    delta = ts - now
    return f"in {span(delta)}" if delta >= 0 else f"expired {span(-delta)} ago"


def status_lines(p: Probe, cfg: Config, report: Any, why: str | None) -> list[str]:
    now = time.time()
    lines: list[str] = []
    if p.health is not None:
        h = p.health
        lines.append(
            f"daemon:    running at {p.url} (tokn-router {h.get('version', '?')}, "
            f"up {span(h.get('uptime_secs') or 0)})"
        )
        listeners = h.get("listeners") or {}
        shown = [f"api {listeners.get('api') or p.url}"]
        shown.append(f"proxy {listeners['proxy']}" if listeners.get("proxy") else "proxy off")
        lines.append(f"listeners: {', '.join(shown)}")
        accounts = h.get("accounts") or []
        if accounts:
            lines.append("accounts:")
            rows = [["ID", "PROVIDER", "STATE", "TOKEN", "DETAIL"]]
            for a in accounts:
                rows.append(
                    [
                        str(a.get("id")),
                        str(a.get("provider")),
                        str(a.get("state")),
                        _expiry(a.get("token_expires_at"), now),
                        account_detail(a, now),
                    ]
                )
            lines += _table(rows)
        else:
            lines.append("accounts:  none (add one with `tokn-router login`)")
        usage = h.get("usage")
        if isinstance(usage, dict):
            if usage.get("enabled") is False:
                lines.append("ledger:    disabled ([usage] enabled = false)")
            elif usage.get("ok") is False:
                lines.append(f"ledger:    {usage.get('path')}: failing: {usage.get('last_error')}")
            else:
                lines.append(f"ledger:    {usage.get('path')}")
    else:
        fix = (
            "another program uses that port; point `tokn-router status --port N` at the daemon"
            if p.foreign
            else "start it with `tokn-router serve`"
        )
        lines.append(f"daemon:    not running: {p.error}; {fix}")
        if cfg.accounts:
            lines.append("accounts (from the config):")
            rows = [["ID", "PROVIDER", "ENABLED"]]
            rows += [[a.id, a.provider, "yes" if a.enabled else "no"] for a in cfg.accounts]
            lines += _table(rows)
        else:
            lines.append("accounts:  none (add one with `tokn-router login`)")
    lines.append(_usage_line(report, why))
    return lines


@app.command
def status(*, host: Host = None, port: Port = None, as_json: Json = False) -> int:
    """Is the daemon running? Its listeners, each account's state, today's usage.

    Reads /healthz from the configured API address ([server] host and port;
    --host / --port for a daemon started elsewhere). Exits 0 when the daemon
    answers, 1 when it does not.

    --json prints {"format": 1, "url": ..., "running": true|false, "error":
    why not (or null), "health": the /healthz body (or null), "today": the
    `usage --json` report of today (or null)}.

    Parameters
    ----------
    host
        Address of the daemon (default [server] host).
    port
        Port of the daemon (default [server] port).
    as_json
        Print JSON (format above) instead of text.
    """
    cfg_path = _context.config_path()
    cfg = config.load(cfg_path)
    p = probe(api_url(cfg, host, port))
    report, why = today_usage(cfg, cfg_path)
    if as_json:
        from tokn_router.usage import queries

        print(
            json.dumps(
                {
                    "format": JSON_FORMAT,
                    "url": p.url,
                    "running": p.running,
                    "error": p.error,
                    "health": p.health,
                    "today": queries.report_json(report) if report is not None else None,
                },
                indent=2,
            )
        )
    else:
        for line in status_lines(p, cfg, report, why):
            print(line)
    return 0 if p.running else 1
