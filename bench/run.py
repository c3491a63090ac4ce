"""``python -m bench``: measure tokn-router against a direct connection and the floor.

One invocation starts the fake upstream (HTTPS and plain HTTP, a trustme CA) and
then, per upstream configuration (``tls`` first, then ``plain``): the floor relay
(``bench/floor.py``) and the daemon as users start it (``tokn-router serve --port
0``, its start-up measured), and runs each phase in rounds that alternate DIRECT
(client → fake), FLOOR (client → floor → fake) and ROUTER (client → daemon → fake).
It prints a table and writes a JSON file. The MITM-proxy phases run (TLS
configuration only) against a second daemon (``serve --with-proxy --proxy-port
0``), with its API listener as ROUTER and ``CONNECT`` + TLS through its proxy as
MITM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.client import Spec
from bench.phases import BY_NAME, PHASES, Load, Phase

CHAT = "/v1/chat/completions"
DAEMON_TARGETS = ("router", "mitm", "mitm_newhost")  # the targets that go through tokn-router
CONFIGS = ("tls", "plain")  # upstream configurations, in the order they run
BODY_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Count to two hundred, one number per token."},
]


def request_body(load: Load) -> str:
    body: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": BODY_MESSAGES,
        "max_tokens": load.chunks,
    }
    if load.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if load.delay_ms:
        body["x_bench_delay_ms"] = load.delay_ms
    return json.dumps(body, separators=(",", ":"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- processes


@dataclass
class Fake:
    proc: subprocess.Popen[bytes]
    url: str  # plain HTTP
    tls_url: str  # HTTPS (trustme certificate)
    ca_file: str  # the CA that signed it (SSL_CERT_FILE of the daemons)
    pids: list[int]

    def cpu(self) -> float:
        return sum(procs.cpu_seconds(p) for p in self.pids)

    def base(self, config: str) -> str:
        return self.tls_url if config == "tls" else self.url


def make_certificates(home: Path) -> tuple[str, str]:
    """(CA file, server PEM with key and chain) for the fake's HTTPS port."""
    import trustme  # a test dependency: only the orchestrator needs it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, server_pem = home / "upstream-ca.pem", home / "upstream-server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return str(ca_file), str(server_pem)


def start_fake(n_procs: int, home: Path) -> Fake:
    ca_file, server_pem = make_certificates(home)
    args = [procs.python(), "-m", "bench.fake_upstream", "--port", "0", "--tls-cert", server_pem]
    p = procs.spawn([*args, "--procs", str(n_procs)])
    assert p.stdout is not None
    reader = procs.LineReader(p.stdout)
    m = reader.wait_for(
        r"listening on (http://127\.0\.0\.1:\d+) (https://127\.0\.0\.1:\d+) pids ([\d ]+)", 15
    )
    pids = [int(x) for x in m.group(3).split()]
    return Fake(p, m.group(1), m.group(2), ca_file, pids)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Floor:
    proc: subprocess.Popen[bytes]
    pid: int
    port: int


def start_floor(fake: Fake, config: str) -> Floor:
    args = [procs.python(), "-m", "bench.floor", "--upstream", fake.base(config)]
    p = procs.spawn([*args, "--cafile", fake.ca_file])
    assert p.stdout is not None
    m = procs.LineReader(p.stdout).wait_for(r"listening on http://127\.0\.0\.1:(\d+)", 15)
    return Floor(p, p.pid, int(m.group(1)))


def daemon_exe() -> list[str]:
    exe = Path(sys.executable).parent / "tokn-router"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("tokn-router")
    if found:
        return [found]
    return [sys.executable, "-c", "from tokn_router.cli import entrypoint; entrypoint()"]


def write_config(
    state: Path, fake: Fake, config: str, extra: str = "", intercept: tuple[str, ...] = ()
) -> Path:
    """A fresh config: every start-up exchanges the GitHub token at the fake.

    ``base_url`` pins the API base to the fake: a token the daemon persisted and
    re-reads carries no ``endpoints.api``. ``intercept`` hosts (``host:port``) are
    TLS-terminated by the MITM proxy besides its built-in ones.
    """
    cfg = state / "config.toml"
    proxy_mode = ""
    if intercept:
        proxy_mode = "\n[proxy_mode]\nintercept_hosts = " + json.dumps(list(intercept)) + "\n"
    cfg.write_text(
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n\n"
        "[[accounts]]\n"
        'id = "bench"\n'
        'provider = "github-copilot"\n'
        'refresh_token = "gho_bench"\n'
        f'refresh_url = "{fake.base(config)}/copilot_internal/v2/token"\n'
        f'base_url = "{fake.base(config)}"\n' + proxy_mode + (f"\n{extra}\n" if extra else "")
    )
    cfg.chmod(0o600)
    return cfg


def http_get_status(port: int, path: str, timeout: float = 2.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        head = s.recv(65536)
    try:
        return int(head[9:12])
    except ValueError:
        return 0


def http_get_json(port: int, path: str, timeout: float = 2.0) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return json.loads(body)


def check_account(port: int, err_log: Path, timeout: float = 10.0) -> None:
    """The token exchange and the model fetch really worked (over TLS, for the TLS fake).

    ``/v1/models`` answers 200 from the static list before the first exchange is
    done (and even when it failed), so the start-up figure alone would not tell:
    wait, after it was taken, until the account is healthy with its live list.
    """
    deadline = time.perf_counter() + timeout
    while True:
        health = http_get_json(port, "/healthz")
        account = (health.get("accounts") or [{}])[0]
        if (
            account.get("state") == "healthy"
            and account.get("models")
            and not (account.get("last_error"))
        ):
            return
        if time.perf_counter() > deadline:
            err = err_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the bench account is not healthy: {account}\nstderr:\n{err}")
        time.sleep(0.01)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    pid: int
    port: int
    startup_s: float
    startup_cpu_s: float  # the daemon's CPU up to its first 200 (less noisy than wall time)
    proxy_port: int | None = None  # with --with-proxy
    ca_file: str = ""  # the proxy's CA certificate


def start_daemon(
    cfg: Path,
    fake: Fake,
    home: Path,
    config: str,
    *,
    timeout: float = 30.0,
    with_proxy: bool = False,
) -> Daemon:
    env = procs.child_env(
        {
            "TOKN_ROUTER_CONFIG": str(cfg),
            "TOKN_ROUTER_LOG": "warning",
            "TOKN_ROUTER_GITHUB_URL": fake.base(config),
            "TOKN_ROUTER_GITHUB_API_URL": fake.base(config),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            # trusted on top of the system roots, as a corporate CA would be
            "SSL_CERT_FILE": fake.ca_file,
        }
    )
    stderr = open(home / "daemon-stderr.log", "ab")  # noqa: SIM115 - lives as long as the daemon
    args = [*daemon_exe(), "serve", "--port", "0"]
    if with_proxy:
        args += ["--with-proxy", "--proxy-port", "0"]
    t0 = time.perf_counter()
    p = procs.spawn(args, env=env, stderr=stderr)
    stderr.close()
    assert p.stdout is not None
    reader = procs.LineReader(p.stdout)
    try:
        m = reader.wait_for(r"^listening on http://127\.0\.0\.1:(\d+)", timeout)
    except RuntimeError as e:
        err = (home / "daemon-stderr.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{e}\nstderr:\n{err}") from None
    port = int(m.group(1))
    deadline = time.perf_counter() + timeout
    status = 0
    while True:
        try:
            status = http_get_status(port, "/v1/models")
            if status == 200:
                break
        except OSError:
            pass
        if time.perf_counter() > deadline:
            err = (home / "daemon-stderr.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"the daemon never answered 200 on /v1/models (last status {status})\n"
                f"stderr:\n{err}"
            )
        time.sleep(0.002)
    startup = time.perf_counter() - t0
    startup_cpu = procs.cpu_seconds(p.pid)
    check_account(port, home / "daemon-stderr.log")
    d = Daemon(p, p.pid, port, startup, startup_cpu)
    if with_proxy:  # the banner printed these before "listening on"
        d.proxy_port = int(
            reader.wait_for(r"proxy listening on http://127\.0\.0\.1:(\d+)", 1).group(1)
        )
        d.ca_file = reader.wait_for(r"CA certificate: (.+)$", 1).group(1).strip()
    return d


def compile_package() -> bool:
    """Write tokn_router's bytecode before any daemon is timed.

    ``pip install`` compiles every module; an editable install writes the
    ``.pyc`` files at the first import unless ``PYTHONDONTWRITEBYTECODE`` is set,
    in which case every start-up would compile the ~100 modules again (~0.1 s)
    and the start-up figure would measure the compiler, not what users get.
    """
    code = (
        "import compileall, os, tokn_router; "
        "raise SystemExit(not compileall.compile_dir("
        "os.path.dirname(tokn_router.__file__), quiet=1))"
    )
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run([sys.executable, "-c", code], env=procs.child_env(), timeout=60)
        return done.returncode == 0
    return False


def probe_proxy() -> subprocess.Popen[str] | None:
    """Start ``tokn-router serve --help`` (read by :func:`supports_proxy`, meanwhile the
    fake and the floor start)."""
    try:
        return subprocess.Popen(
            [*daemon_exe(), "serve", "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=procs.child_env({"COLUMNS": "200"}),
        )
    except OSError:
        return None


def supports_proxy(probe: subprocess.Popen[str] | None) -> bool:
    if probe is None:
        return False
    try:
        out, _ = probe.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.wait()
        return False
    return "--with-proxy" in out


# -------------------------------------------------------------------------- loads

MITM_HOST = "api.openai.com"  # intercepted built-in; in route mode never contacted


@dataclass(frozen=True)
class Endpoint:
    """Where a target sends its requests."""

    port: int  # the API port (the fake's for DIRECT)
    path: str
    daemon: Daemon | None = None
    pid: int | None = None  # whose CPU and RSS are measured (and profiled): daemon or floor
    proxy_port: int | None = None  # through the MITM proxy: CONNECT there
    ca_file: str = ""
    new_host_each: bool = False  # a never-seen host per tunnel (mints a leaf)
    tls: bool = False  # TLS straight to the port (DIRECT to the HTTPS fake)


def daemon_endpoint(d: Daemon, **kw: Any) -> Endpoint:
    return Endpoint(d.port, CHAT, d, d.pid, **kw)


def newhost_names(rnd: int, n: int) -> list[str]:
    """Distinct intercepted names for round ``rnd`` (-1: the warm-up); never resolved."""
    tag = "w" if rnd < 0 else f"r{rnd}"
    return [f"bench-{tag}-{i}.test" for i in range(n)]


def newhost_intercepts(phases: list[Phase], args: argparse.Namespace) -> tuple[str, ...]:
    """Every name the ``mitm_newhost`` target will use in this invocation."""
    names: list[str] = []
    for phase in phases:
        if "mitm_newhost" in phase.targets:
            n = phase.load(args.quick).requests
            rounds = args.rounds or phase.n_rounds(args.quick)
            names += newhost_names(-1, phase.warmup)
            for rnd in range(rounds):
                names += newhost_names(rnd, n)
    return tuple(f"{h}:443" for h in dict.fromkeys(names))


def run_load(
    load: Load,
    *,
    target: str,
    rnd: int,
    ep: Endpoint,
    fake: Fake,
    clients: procs.ClientPool,
    profile: list[str] | None = None,
) -> report.RunResult:
    n = max(1, min(len(clients.workers), load.connections))
    start_at = time.perf_counter() + 0.05  # the workers are up: they only parse the spec
    specs = []
    body = request_body(load)
    hosts = newhost_names(rnd, load.requests) if ep.new_host_each else [MITM_HOST]
    first_host = 0
    for i in range(n):
        conns = load.connections // n + (1 if i < load.connections % n else 0)
        n_hosts = conns * load.per_conn if ep.new_host_each else 1
        spec = Spec(
            port=ep.port,
            path=ep.path,
            body=body,
            stream=load.stream,
            connections=conns,
            per_conn=load.per_conn,
            expect_events=load.events_per_stream if load.stream else None,
            record_gaps=load.record_gaps,
            start_at=start_at,
            deadline_s=load.deadline_s,
            stagger_s=load.stagger_s,
            new_conn_each=load.new_conn_each,
            proxy_port=ep.proxy_port,
            proxy_hosts=hosts[first_host : first_host + n_hosts] if ep.proxy_port else [],
            ca_file=ep.ca_file,
            tls=ep.tls,
        )
        specs.append(json.dumps(asdict(spec)))
        if ep.new_host_each:
            first_host += n_hosts
    spy = None
    if profile and ep.pid:
        spy = procs.spawn(
            [*profile[:-1], "--pid", str(ep.pid), "-o", profile[-1]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # py-spy attaches before the load starts
        start_at = time.perf_counter() + 0.05
        specs = [json.dumps({**json.loads(sp), "start_at": start_at}) for sp in specs]
    pid = ep.pid
    cpu0 = procs.cpu_mark(pid) if pid else None
    fake0 = fake.cpu()
    busy0 = procs.machine_busy_seconds()
    window0 = time.perf_counter()
    overflows0 = procs.listen_overflows()
    if pid:
        procs.reset_peak_rss(pid)
    sampler = procs.RssSampler(pid) if pid else None
    try:
        if sampler:
            sampler.__enter__()
        outs = clients.run(specs, timeout=load.deadline_s + 60)
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
        if spy is not None:  # py-spy writes its file on SIGINT
            with contextlib.suppress(ProcessLookupError):
                os.kill(spy.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
            procs.stop(spy)
    res = report.RunResult(target=target, round=rnd, requests=load.requests)
    res.fake_cpu_s = fake.cpu() - fake0
    res.machine_busy_s = procs.machine_busy_seconds() - busy0
    res.window_s = time.perf_counter() - window0
    res.listen_overflows = procs.listen_overflows() - overflows0
    if pid and cpu0 is not None:
        cpu1 = procs.cpu_mark(pid)
        res.daemon_cpu_s = procs.cpu_between(cpu0, cpu1)
        res.daemon_sys_s = cpu1.stat[1] - cpu0.stat[1]
        hwm = procs.status_kb(pid, "VmHWM")
        assert sampler is not None
        res.peak_rss_mb = max(hwm, sampler.peak_kb) / 1024.0
    t_start = min(o["t_start"] for o in outs)
    t_end = max(o["t_end"] for o in outs)
    res.wall_s = t_end - t_start
    for o in outs:
        res.completed += o["completed"]
        res.events += o["events"]
        for k, v in o["errors"].items():
            res.errors[k] = res.errors.get(k, 0) + v
        res.first_ms += o["first_ms"]
        res.total_ms += o["total_ms"]
        res.gaps_us += o["gaps_us"]
        res.connect_ms += o["connect_ms"]
        res.tls_ms += o["tls_ms"]
        res.client_cpu_s += o["cpu_s"]
    return res


# --------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in (
        "tokn-router",
        "trio",
        "trustme",
        "hypercorn",
        "quart",
        "quart-trio",
        "httpx2",
        "h11",
        "msgspec",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    git = None
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        git = subprocess.run(
            ["git", "-C", str(procs.REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "openssl": __import__("ssl").OPENSSL_VERSION,
        "mem_total_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "git_head": git,
        "loadavg_before": list(os.getloadavg()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark tokn-router against DIRECT (fake upstream)."
    )
    ap.add_argument("--quick", action="store_true", help="tiny counts (< 30 s), for the test")
    ap.add_argument("--out", default="bench/results/latest.json", help="JSON output path")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated phases: "
        + ",".join(p.name for p in PHASES)
        + " (start-up always; `startup` alone runs no phase)",
    )
    ap.add_argument("--rounds", type=int, default=None, help="override the rounds of every phase")
    ap.add_argument(
        "--upstream",
        default="both",
        choices=("both", "tls", "plain"),
        help="upstream configuration(s): HTTPS as Copilot is reached, plain HTTP, or both",
    )
    ap.add_argument("--client-procs", type=int, default=1, help="load client processes per run")
    ap.add_argument("--fake-procs", type=int, default=1, help="fake upstream processes")
    ap.add_argument("--startup-runs", type=int, default=None, help="daemon spawns for start-up")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="attach `py-spy record -f raw` to the daemon during each tokn-router run; "
        "writes DIR/PHASE-rROUND.txt (summarise with python -m bench.flame); figures inflated",
    )
    ap.add_argument(
        "--profile-opts",
        default="",
        help='extra py-spy record options, e.g. "--threads" or "--gil" (quoted, one string)',
    )
    ap.add_argument(
        "--config-extra",
        default="",
        metavar="TOML",
        help='TOML appended to the daemon config (experiments), e.g. "[usage]\\nenabled = false"',
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.install_cleanup()
    selected = list(PHASES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip() and n.strip() != "startup"]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            log(f"unknown phase(s): {', '.join(unknown)}")
            return 2
        selected = [BY_NAME[n] for n in names]
    configs = [c for c in CONFIGS if args.upstream in ("both", c)]
    started = time.time()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    meta = machine_info()
    meta["command"] = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta["quick"] = args.quick
    meta["configs"] = configs
    meta["client_procs"] = args.client_procs
    meta["fake_procs"] = args.fake_procs
    args.config_extra = args.config_extra.replace("\\n", "\n")
    meta["config_extra"] = args.config_extra or None
    meta["profiled"] = bool(args.profile)
    out: dict[str, Any] = {}
    with procs.interrupt_cleanup(), tempfile.TemporaryDirectory(prefix="tokn-bench-") as tmp:
        home = Path(tmp)
        (home / ".config").mkdir()
        probe = probe_proxy()
        meta["bytecode_compiled"] = compile_package()
        clients = procs.ClientPool(args.client_procs)
        fake = start_fake(args.fake_procs, home)
        has_proxy = supports_proxy(probe)
        meta["daemon_has_with_proxy"] = has_proxy
        log(f"fake upstream at {fake.tls_url} and {fake.url} (pids {fake.pids})")
        for config in configs:
            out[config] = run_config(config, args, selected, fake, clients, home, has_proxy)
        clients.close()
        procs.stop(fake.proc)
    tls_out = out.get("tls", {"startup": {}, "phases": {}})
    plain_out = out.get("plain", {"startup": {}, "phases": {}})
    meta["other_processes_cores"] = {
        f"{config}:{name}": report._r(
            report._div(
                sum(ph[t]["other_cpu_s"] for t in ph if t in DAEMON_TARGETS),
                sum(ph[t]["window_s"] for t in ph if t in DAEMON_TARGETS),
            ),
            2,
        )
        for config, o in out.items()
        for name, ph in o["phases"].items()
        if "router" in ph
    }
    for config, o in out.items():
        meta.update({f"{k}_{config}": v for k, v in o["meta"].items()})
    figs = report.all_figures(
        tls_out["startup"], tls_out["phases"], plain_out["startup"], plain_out["phases"]
    )
    targets = report.check_targets(figs)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    meta["orchestrator_cpu_s"] = round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 3)
    meta["duration_s"] = round(time.time() - started, 1)
    meta["loadavg_after"] = list(os.getloadavg())
    result = {
        "meta": meta,
        "figures": figs,
        "targets": targets,
        "startup": tls_out["startup"],
        "phases": tls_out["phases"],
        "startup_plain": plain_out["startup"],
        "phases_plain": plain_out["phases"],
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table(figs, targets, markdown=args.markdown))
    if any("router" in tls_out["phases"].get(p.name, {}) for p in PHASES if p.needs == "proxy"):
        print()
        print(report.proxy_table(figs, markdown=args.markdown))
    print(
        "\nother processes' CPU during the tokn-router runs (cores, of "
        f"{meta['nproc']}): "
        + ", ".join(f"{k} {v}" for k, v in meta["other_processes_cores"].items())
    )
    missed = [t["target"] for t in targets if t["met"] is False]
    print(f"\n{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else ""))
    print(f"wrote {dest} in {meta['duration_s']} s")
    return 0


def run_config(
    config: str,
    args: argparse.Namespace,
    selected: list[Phase],
    fake: Fake,
    clients: procs.ClientPool,
    home: Path,
    has_proxy: bool,
) -> dict[str, Any]:
    """Every selected phase against one upstream configuration ("tls" or "plain")."""
    state = home / f"state-{config}"
    state.mkdir(mode=0o700)
    floor = start_floor(fake, config)
    # -- start-up: fresh daemons, then the one that is measured (extra spawns: TLS only)
    n_start = args.startup_runs if args.startup_runs is not None else (0 if args.quick else 3)
    if config != "tls":
        n_start = 0
    startups, startup_cpus = [], []
    cfg = write_config(state, fake, config, args.config_extra)
    for _ in range(n_start):
        d = start_daemon(cfg, fake, home, config)
        startups.append(d.startup_s)
        startup_cpus.append(d.startup_cpu_s)
        procs.stop(d.proc, graceful=5)
    daemon = start_daemon(cfg, fake, home, config)
    startups.append(daemon.startup_s)
    startup_cpus.append(daemon.startup_cpu_s)
    time.sleep(0.3 if args.quick else 1.0)
    startup: dict[str, Any] = {
        "startup_s": report._r(report.median(startups), 3),
        "startup_runs_s": [round(x, 3) for x in startups],
        "startup_cpu_s": report._r(report.median(startup_cpus), 3),
        "idle_rss_mb": round(procs.status_kb(daemon.pid, "VmRSS") / 1024.0, 1),
        "floor_idle_rss_mb": round(procs.status_kb(floor.pid, "VmRSS") / 1024.0, 1),
    }
    log(
        f"[{config}] daemon pid {daemon.pid} on port {daemon.port}: start-up {startups} s, "
        f"idle RSS {startup['idle_rss_mb']} MB; floor pid {floor.pid} on port {floor.port}"
    )
    tls = config == "tls"
    direct = Endpoint(
        port_of(fake.base(config)), "/chat/completions", tls=tls, ca_file=fake.ca_file
    )
    endpoints = {
        "direct": direct,
        "floor": Endpoint(floor.port, CHAT, pid=floor.pid),
        "router": daemon_endpoint(daemon),
    }
    phases_out: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    pdaemon: Daemon | None = None  # the --with-proxy daemon, started for the first proxy phase
    proxy_endpoints: dict[str, Endpoint] = {}
    for phase in selected:
        if phase.needs == "proxy" and not tls:
            continue  # the MITM proxy is measured on the TLS configuration only
        if phase.needs == "proxy" and not has_proxy:
            phases_out[phase.name] = {"skipped": "tokn-router serve has no --with-proxy"}
            continue
        if phase.needs == "proxy" and pdaemon is None:
            pstate = home / "state-proxy"
            pstate.mkdir(mode=0o700)
            intercept = newhost_intercepts(selected, args)
            pcfg = write_config(pstate, fake, config, args.config_extra, intercept)
            pdaemon = start_daemon(pcfg, fake, home, config, with_proxy=True)
            time.sleep(0.3 if args.quick else 1.0)
            startup["with_proxy_startup_s"] = round(pdaemon.startup_s, 3)
            startup["with_proxy_idle_rss_mb"] = round(
                procs.status_kb(pdaemon.pid, "VmRSS") / 1024.0, 1
            )
            log(
                f"--with-proxy daemon pid {pdaemon.pid}: API port {pdaemon.port}, proxy port "
                f"{pdaemon.proxy_port}, start-up {startup['with_proxy_startup_s']} s (CA "
                f"created), idle RSS {startup['with_proxy_idle_rss_mb']} MB"
            )
            mitm = daemon_endpoint(pdaemon, proxy_port=pdaemon.proxy_port, ca_file=pdaemon.ca_file)
            proxy_endpoints = {
                "direct": direct,
                "router": daemon_endpoint(pdaemon),
                "mitm": mitm,
                "mitm_newhost": replace(mitm, new_host_each=True),
            }
        eps = proxy_endpoints if phase.needs == "proxy" else endpoints
        phases_out[phase.name] = run_phase(phase, args, eps, fake, clients, config)
    if pdaemon is not None:
        meta["with_proxy_daemon_rss_end_mb"] = round(
            procs.status_kb(pdaemon.pid, "VmRSS") / 1024.0, 1
        )
        procs.stop(pdaemon.proc, graceful=10)
    meta["daemon_rss_end_mb"] = round(procs.status_kb(daemon.pid, "VmRSS") / 1024.0, 1)
    procs.stop(daemon.proc, graceful=10)
    procs.stop(floor.proc)
    return {"startup": startup, "phases": phases_out, "meta": meta}


def ours(res: report.RunResult) -> float:
    return res.client_cpu_s + res.fake_cpu_s + (res.daemon_cpu_s or 0.0)


def run_phase(
    phase: Phase,
    args: argparse.Namespace,
    endpoints: dict[str, Endpoint],
    fake: Fake,
    clients: procs.ClientPool,
    config: str,
) -> dict[str, Any]:
    load = phase.load(args.quick)
    rounds = args.rounds or phase.n_rounds(args.quick)
    targets = [t for t in phase.targets if t in endpoints]
    if phase.warmup:
        warm = replace(load, connections=1, per_conn=phase.warmup, record_gaps=False)
        for t in targets:
            run_load(warm, target=t, rnd=-1, ep=endpoints[t], fake=fake, clients=clients)
    runs: dict[str, list[report.RunResult]] = {t: [] for t in targets}
    for rnd in range(rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]
        for t in order:
            ep = endpoints[t]
            profile = None
            if args.profile and ep.pid is not None:
                spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                tag = "" if t == "router" else f"-{t}"
                prof_path = Path(args.profile) / f"{config}-{phase.name}{tag}-r{rnd}.txt"
                prof_path.parent.mkdir(parents=True, exist_ok=True)
                profile = [spy, "record", "--nonblocking", "-r", "250", "-f", "raw"]
                profile += [*shlex.split(args.profile_opts), str(prof_path)]
            res = run_load(
                load, target=t, rnd=rnd, ep=ep, fake=fake, clients=clients, profile=profile
            )
            runs[t].append(res)
            log(
                f"[{config}] {phase.name:<10} round {rnd} {t:<7} {res.completed}/{res.requests} ok, "
                f"{res.error_count} errors {res.errors or ''} wall {res.wall_s:.3f}s"
                + (
                    f" relay cpu {res.daemon_cpu_s:.3f}s (sys {res.daemon_sys_s or 0:.2f}s)"
                    if res.daemon_cpu_s is not None
                    else ""
                )
                + f" client cpu {res.client_cpu_s:.2f}s fake cpu {res.fake_cpu_s:.2f}s"
                + f" other processes {res.machine_busy_s - ours(res):.2f}s"
                + (f" LISTEN OVERFLOWS {res.listen_overflows}" if res.listen_overflows else "")
            )
    out: dict[str, Any] = {
        "title": phase.title,
        "load": asdict(load),
        "rounds": rounds,
        "runs": [r.brief() for t in targets for r in runs[t]],
    }
    for t in targets:
        out[t] = report.summarize(runs[t])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
