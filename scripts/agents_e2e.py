"""Run Codex CLI and Claude Code one-shot against `tokn-router serve` and the fake upstream.

Fully offline: the only server the agents may reach is the daemon on 127.0.0.1. Proxy
variables point at a local "dead" proxy that records and drops every connection, so an
agent that tries to reach the internet shows up in the table instead of leaking.

    python scripts/agents_e2e.py --bin-dir DIR [--scratch DIR] [--keep] [-k SUBSTR ...]

DIR holds the `codex` and `claude` executables (`nox -s agents` installs pinned versions).
Each scenario keeps its evidence in SCRATCH/<scenario>/ (agent stdout/stderr, the daemon's
debug log for that run, every request the fake received); the scratch dir is kept when a
scenario fails or with --keep. Exit status: 0 when every scenario passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tomlkit  # noqa: E402
from tests.fakes import FakeUpstream, RecordedRequest  # noqa: E402

AGENT_KEY = "sk-agent-key-must-never-reach-upstream"
TOOL_MARK = "tokn-tool-ok"
TOOL_PROMPT = f"echo {TOOL_MARK}"  # the fake passes the prompt as the tool's string args


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


class DeadProxy:
    """A local 'proxy' that records the first line of every connection and closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.hits: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True, name="dead-proxy").start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2)
                line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1", "replace")
            except OSError:
                line = "<no request line>"
            finally:
                conn.close()
            with self._lock:
                self.hits.append(line or "<empty>")

    def take(self) -> list[str]:
        with self._lock:
            out, self.hits = self.hits, []
        return out

    def close(self) -> None:
        self.sock.close()


class Tap:
    """A recording pass-through between the agents and the daemon (the daemon logs no bodies).

    Every exchange is kept: what the agent sent and what tokn-router answered (streams are
    forwarded piece by piece and recorded whole).
    """

    def __init__(self, target: str) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        tap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec: dict[str, Any] = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": body.decode("utf-8", "replace"),
                }
                conn = http.client.HTTPConnection(tap.target.hostname, tap.target.port, timeout=600)
                hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                rec["status"] = resp.status
                rec["response_headers"] = dict(resp.getheaders())
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in hop:
                        self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                got = bytearray()
                while chunk := resp.read1(65536):
                    got += chunk
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                conn.close()
                rec["response"] = got.decode("utf-8", "replace")
                with tap._lock:
                    tap.records.append(rec)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="tap").start()

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self.records = self.records, []
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    """`tokn-router serve --port 0` with stderr (debug log) going to a file."""

    def __init__(self, exe: list[str], config: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_fh = log.open("wb")
        self.proc = subprocess.Popen(
            [*exe, "--config", str(config), "serve", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_fh,
            env=env,
            start_new_session=True,
        )
        self.stdout_lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True, name="daemon-stdout").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m and not line.startswith("proxy"):
                self.url = m.group(1).rstrip("/")
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30) -> str:
        self._ready.wait(timeout)
        if not self.url:
            self.stop()
            raise RuntimeError(
                "tokn-router serve did not print 'listening on URL'\n"
                f"stdout:\n{chr(10).join(self.stdout_lines)}\n"
                f"stderr:\n{self.log.read_text(errors='replace')[-4000:]}"
            )
        return self.url

    def log_pos(self) -> int:
        self._log_fh.flush()
        return self.log.stat().st_size

    def log_since(self, pos: int) -> str:
        with self.log.open("rb") as fh:
            fh.seek(pos)
            return fh.read().decode("utf-8", "replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log_fh.close()
        return self.proc.returncode


class ToolSwitch:
    """Lets a scenario make the fake ignore the request's tools (plain "Echo:" reply).

    Codex always sends tools, and the fake answers any tool-bearing user turn with a call
    of the first tool; the "say hi" text scenarios need the text path instead.
    """

    def __init__(self, fake: FakeUpstream) -> None:
        self.ignore_tools = False
        orig = fake._plan

        def plan(messages: Any, tools: Any, tool_choice: Any, script: Any, **kw: Any) -> Any:
            return orig(messages, None if self.ignore_tools else tools, tool_choice, script, **kw)

        fake._plan = plan  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


@dataclass
class Scenario:
    name: str
    agent: str  # codex | claude
    model: str
    upstream_path: str  # the fake path the daemon must use (native vs translated)
    args: list[str]
    tool: bool
    ignore_tools: bool = False
    checks: list[Callable[[Result, list[RecordedRequest]], str | None]] = field(
        default_factory=list
    )


def expect_stdout(*needles: str) -> Callable[[Result, list[RecordedRequest]], str | None]:
    def check(res: Result, _reqs: list[RecordedRequest]) -> str | None:
        missing = [n for n in needles if n not in res.stdout]
        return f"stdout lacks {missing!r}" if missing else None

    return check


def _model_calls(reqs: list[RecordedRequest]) -> list[RecordedRequest]:
    paths = {"/responses", "/chat/completions", "/v1/chat/completions", "/v1/messages"}
    return [r for r in reqs if r.path in paths]


def _tool_output(r: RecordedRequest) -> str | None:
    """The text of the tool result carried by a follow-up request (None if it has none)."""
    body = r.json or {}
    if r.path == "/responses":
        for i in body.get("input") or []:
            if isinstance(i, dict) and i.get("type") == "function_call_output":
                out = i.get("output")
                return out if isinstance(out, str) else json.dumps(out)
        return None
    msgs = body.get("messages") or []
    if r.path == "/v1/messages":
        for m in reversed(msgs):
            for p in m.get("content") if isinstance(m.get("content"), list) else []:
                if isinstance(p, dict) and p.get("type") == "tool_result":
                    c = p.get("content")
                    if isinstance(c, list):
                        return "".join(x.get("text", "") for x in c if isinstance(x, dict))
                    return str(c or "")
        return None
    for m in reversed(msgs):
        if m.get("role") == "tool":
            c = m.get("content")
            if isinstance(c, list):
                return "".join(x.get("text", "") for x in c if isinstance(x, dict))
            return str(c or "")
    return None


def expect_round_trip(kind: str) -> Callable[[Result, list[RecordedRequest]], str | None]:
    """Upstream answered a tool-bearing turn with a call, got the tool's output back, and the
    agent printed the fake's "Tool result: <that output>" answer."""

    def check(res: Result, reqs: list[RecordedRequest]) -> str | None:
        calls = _model_calls(reqs)
        if len(calls) < 2:
            return f"{kind}: expected >=2 model requests upstream, got {len(calls)}"
        outputs = [o for r in calls[1:] if (o := _tool_output(r)) is not None]
        if not outputs:
            return f"{kind}: no tool result in any follow-up request upstream"
        if "Tool result:" not in res.stdout:
            return "stdout lacks 'Tool result:'"
        first_lines = {(o.strip().splitlines() or [""])[0] for o in outputs}
        if not any(line in res.stdout for line in first_lines):
            return f"{kind}: stdout does not echo the tool output ({sorted(first_lines)[:2]!r})"
        return None

    return check


def expect_upstream(path: str) -> Callable[[Result, list[RecordedRequest]], str | None]:
    def check(_res: Result, reqs: list[RecordedRequest]) -> str | None:
        calls = _model_calls(reqs)
        if not calls:
            return "no model request reached the fake"
        wrong = sorted({r.path for r in calls if r.path != path})
        bad = [f"{r.path}->{r.status}" for r in calls if r.status != 200]
        out = []
        if wrong:
            out.append(f"upstream path(s) {wrong}, expected {path}")
        if bad:
            out.append(f"non-200 upstream: {bad}")
        return "; ".join(out) or None

    return check


def expect_no_key_leak(res: Result, reqs: list[RecordedRequest]) -> str | None:
    for r in reqs:
        blob = json.dumps(r.headers) + r.body.decode("utf-8", "replace")
        if AGENT_KEY in blob:
            return f"the agent's API key reached upstream ({r.method} {r.path})"
    return None


def expect_exit0(res: Result, _reqs: list[RecordedRequest]) -> str | None:
    if res.timed_out:
        return "timed out"
    return None if res.rc == 0 else f"exit {res.rc}"


def scenarios() -> list[Scenario]:
    codex_common = ["exec", "--skip-git-repo-check", "--strict-config", "--color", "never"]
    claude_common = ["--output-format", "text"]
    out: list[Scenario] = []
    for model, path, mode in (
        ("gpt-5-mini", "/responses", "native"),
        ("claude-sonnet-4.5", "/chat/completions", "translated"),
    ):
        out.append(
            Scenario(
                f"codex text {mode}",
                "codex",
                model,
                path,
                [*codex_common, "-m", model, "say hi"],
                tool=False,
                ignore_tools=True,
                checks=[expect_stdout("Echo:", "say hi")],
            )
        )
        out.append(
            Scenario(
                f"codex tool {mode}",
                "codex",
                model,
                path,
                [*codex_common, "-m", model, TOOL_PROMPT],
                tool=True,
                checks=[
                    expect_round_trip("exec_command"),
                    expect_stdout(TOOL_MARK),  # the command really ran
                ],
            )
        )
    for model, path, mode in (
        ("claude-sonnet-4.5", "/v1/messages", "native"),
        ("gpt-4.1", "/chat/completions", "translated"),
    ):
        # the prompt goes right after -p: --tools/--allowedTools are variadic
        def base(prompt: str, model: str = model) -> list[str]:
            return ["-p", prompt, "--model", model, *claude_common]

        out.append(
            Scenario(
                f"claude text {mode}",
                "claude",
                model,
                path,
                [*base("say hi"), "--tools", ""],
                tool=False,
                checks=[expect_stdout("Echo:", "say hi")],
            )
        )
        out.append(
            Scenario(
                f"claude tool {mode}",
                "claude",
                model,
                path,
                # full tool list: the fake calls whatever tool comes first
                [*base("say hi"), "--allowedTools", "Bash"],
                tool=True,
                checks=[expect_round_trip("first tool")],
            )
        )
        out.append(
            Scenario(
                f"claude bash {mode}",
                "claude",
                model,
                path,
                [*base(TOOL_PROMPT), "--tools", "Bash", "--allowedTools", "Bash"],
                tool=True,
                # the fake's command is the whole user text, <system-reminder> blocks
                # included, so bash runs but reports a syntax error: the round trip is
                # what is checked, not the command's success
                checks=[expect_round_trip("Bash")],
            )
        )
    for s in out:
        s.checks[:0] = [expect_exit0, expect_upstream(s.upstream_path)]
        s.checks.append(expect_no_key_leak)
    return out


# --------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------


def base_env(home: Path, proxy: DeadProxy) -> dict[str, str]:
    """A clean environment: nothing from the caller but PATH and the locale."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        env[k] = env[k.lower()] = proxy.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for d in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        Path(env[d]).mkdir(parents=True, exist_ok=True)
    return env


def codex_env(env: dict[str, str], home: Path, base_url: str) -> dict[str, str]:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    cfg = tomlkit.document()
    cfg["model"] = "gpt-5-mini"
    cfg["model_provider"] = "tokn"
    cfg["check_for_update_on_startup"] = False
    cfg["approval_policy"] = "never"
    cfg["sandbox_mode"] = "danger-full-access"  # no bubblewrap/landlock needed in CI boxes
    providers = tomlkit.table()
    tokn = tomlkit.table()
    tokn.update(
        {
            "name": "tokn-router",
            "base_url": base_url + "/v1",
            "env_key": "TOKN_ROUTER_API_KEY",
            "wire_api": "responses",
            "request_max_retries": 0,
            "stream_max_retries": 0,
        }
    )
    providers["tokn"] = tokn
    cfg["model_providers"] = providers
    cfg["features"] = {"plugins": False, "remote_plugin": False}
    cfg["analytics"] = {"enabled": False}
    (codex_home / "config.toml").write_text(tomlkit.dumps(cfg))
    return {**env, "CODEX_HOME": str(codex_home), "TOKN_ROUTER_API_KEY": AGENT_KEY}


def claude_env(env: dict[str, str], home: Path, base_url: str, model: str) -> dict[str, str]:
    return {
        **env,
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": AGENT_KEY,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    }


def run_agent(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Result:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return Result(
        rc=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=time.monotonic() - t0,
        timed_out=timed_out,
    )


def dump_requests(reqs: list[RecordedRequest]) -> list[dict[str, Any]]:
    return [
        {
            "method": r.method,
            "path": r.path,
            "query": r.query_string,
            "status": r.status,
            "streamed": r.streamed,
            "completed": r.completed,
            "disconnected": r.disconnected,
            "headers": r.headers,
            "json": r.json,
        }
        for r in reqs
    ]


def summarize_requests(reqs: list[RecordedRequest]) -> str:
    lines = []
    for r in _model_calls(reqs):
        body = r.json or {}
        tools = body.get("tools") or []
        names = [
            t.get("name") or (t.get("function") or {}).get("name") or t.get("type") for t in tools
        ]
        last = (body.get("input") or body.get("messages") or [None])[-1]
        lines.append(
            f"    {r.method} {r.path} -> {r.status} model={body.get('model')} "
            f"stream={body.get('stream')} tools={names[:4]}{'...' if len(names) > 4 else ''} "
            f"last={json.dumps(last)[:300]}"
        )
    return "\n".join(lines) or "    (no model requests)"


def summarize_wire(wire: list[dict[str, Any]]) -> str:
    lines = []
    for w in wire:
        lines.append(
            f"    {w['method']} {w['path']} -> {w.get('status')}: {w.get('response', '')[:400]!r}"
        )
    return "\n".join(lines) or "    (nothing reached tokn-router)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", type=Path, help="directory holding codex and claude")
    ap.add_argument("--scratch", type=Path, help="parent of the scratch dir (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument(
        "-k",
        dest="only",
        action="append",
        default=[],
        help="run scenarios whose name contains SUBSTR",
    )
    ap.add_argument("--timeout", type=float, default=180, help="per agent run, seconds")
    ap.add_argument(
        "--tokn-router",
        default=None,
        help="daemon command (default: the console script next to this Python)",
    )
    args = ap.parse_args(argv)

    bin_dir = args.bin_dir.resolve() if args.bin_dir else None
    search = os.pathsep.join(
        filter(None, [str(bin_dir) if bin_dir else "", os.environ.get("PATH", "")])
    )
    exes = {name: shutil.which(name, path=search) for name in ("codex", "claude")}
    if args.tokn_router:
        daemon_cmd = args.tokn_router.split()
    else:
        script = Path(sys.executable).parent / "tokn-router"
        daemon_cmd = (
            [str(script)] if script.exists() else [shutil.which("tokn-router") or "tokn-router"]
        )

    todo = [s for s in scenarios() if not args.only or any(k in s.name for k in args.only)]
    if args.scratch:
        args.scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="agents-e2e-", dir=args.scratch)).resolve()
    print(f"scratch: {scratch}", flush=True)
    for name, exe in exes.items():
        if exe:
            v = subprocess.run(
                [exe, "--version"],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                env={"PATH": search, "HOME": str(scratch), "DISABLE_AUTOUPDATER": "1"},
                timeout=60,
            )
            print(f"{name}: {exe} ({(v.stdout or v.stderr).strip().splitlines()[-1]})", flush=True)
        else:
            print(f"{name}: NOT FOUND in {search}", flush=True)

    proxy = DeadProxy()
    rows: list[tuple[str, str, str, str]] = []
    failed = False
    with FakeUpstream() as fake:
        switch = ToolSwitch(fake)
        dhome = scratch / "daemon-home"
        (dhome / ".config").mkdir(parents=True)
        config = dhome / ".config" / "tokn-router" / "config.toml"
        config.parent.mkdir(mode=0o700)
        config.write_text(
            tomlkit.dumps({"usage": {"enabled": True}, "accounts": [fake.copilot_account()]})
        )
        config.chmod(0o600)
        denv = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(dhome),
            "XDG_CONFIG_HOME": str(dhome / ".config"),
            "TOKN_ROUTER_CONFIG": str(config),
            "TOKN_ROUTER_GITHUB_URL": fake.url,
            "TOKN_ROUTER_GITHUB_API_URL": fake.url,
            "TOKN_ROUTER_LOG": "debug",
            "NO_PROXY": "*",
            "no_proxy": "*",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }
        daemon = Daemon(daemon_cmd, config, denv, scratch / "daemon.log")
        try:
            base_url = daemon.wait_ready()
            tap = Tap(base_url)
            print(
                f"tokn-router: {base_url} (agents reach it through the recording tap {tap.url}; "
                f"fake upstream {fake.url})\n",
                flush=True,
            )
            for sc in todo:
                exe = exes[sc.agent]
                if not exe:
                    rows.append((sc.name, sc.model, "FAIL", f"{sc.agent} not installed"))
                    failed = True
                    continue
                sdir = scratch / re.sub(r"\W+", "-", sc.name)
                home, work = sdir / "home", sdir / "work"
                work.mkdir(parents=True)
                env = base_env(home, proxy)
                if sc.agent == "codex":
                    env = codex_env(env, home, tap.url)
                else:
                    env = claude_env(env, home, tap.url, sc.model)
                env["PATH"] = search
                start_req = len(fake.requests)
                log_pos = daemon.log_pos()
                proxy.take()
                tap.take()
                switch.ignore_tools = sc.ignore_tools
                res = run_agent([exe, *sc.args], env, work, args.timeout)
                switch.ignore_tools = False
                time.sleep(0.2)  # let the last records and log lines land
                reqs = fake.requests[start_req:]
                dlog = daemon.log_since(log_pos)
                leaks = proxy.take()
                wire = tap.take()
                problems = [p for c in sc.checks if (p := c(res, reqs))]
                if daemon.proc.poll() is not None:
                    problems.append(f"daemon exited ({daemon.proc.returncode})")
                (sdir / "cmd.txt").write_text(" ".join([exe, *sc.args]) + "\n")
                (sdir / "stdout.txt").write_text(res.stdout)
                (sdir / "stderr.txt").write_text(res.stderr)
                (sdir / "daemon.log").write_text(dlog)
                (sdir / "upstream.json").write_text(json.dumps(dump_requests(reqs), indent=1))
                (sdir / "agent-wire.json").write_text(json.dumps(wire, indent=1))
                (sdir / "proxy.txt").write_text("\n".join(leaks) + "\n" if leaks else "")
                ok = not problems
                failed |= not ok
                note = "; ".join(problems) if problems else (f"{res.seconds:.1f}s")
                if leaks:
                    note += f"; {len(leaks)} proxy attempt(s): {sorted(set(leaks))[:3]}"
                rows.append((sc.name, sc.model, "PASS" if ok else "FAIL", note))
                print(f"[{'PASS' if ok else 'FAIL'}] {sc.name} ({sc.model}) {note}", flush=True)
                if not ok:
                    print(f"  cmd: {' '.join([exe, *sc.args])}")
                    print(f"  exit: {res.rc}  timed out: {res.timed_out}")
                    print("  stdout:\n" + indent(res.stdout[-3000:]))
                    print("  stderr:\n" + indent(res.stderr[-3000:]))
                    print("  upstream requests:\n" + summarize_requests(reqs))
                    print("  agent <-> tokn-router:\n" + summarize_wire(wire))
                    print("  daemon log (tail):\n" + indent(dlog[-4000:]))
                    print(f"  evidence: {sdir}\n", flush=True)
        finally:
            if "tap" in locals():
                tap.close()
            rc = daemon.stop()
            proxy.close()
        if rc not in (0, None):
            rows.append(("daemon shutdown", "-", "FAIL", f"exit {rc}"))
            failed = True

    w = [
        max(len(r[i]) for r in [("scenario", "model", "result", "notes"), *rows]) for i in range(3)
    ]
    print()
    print(f"{'scenario':<{w[0]}}  {'model':<{w[1]}}  {'result':<{w[2]}}  notes")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    if failed or args.keep:
        print(f"\nevidence kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()) or "    (empty)"


if __name__ == "__main__":
    sys.exit(main())
