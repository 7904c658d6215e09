"""Benchmark: the open pixel under load, drip's against nginx serving a static GIF.

Run from the repository root (needs Debian's ``wrk`` and ``nginx``; ``.ci/run`` installs them)::

    .venv/bin/python -m bench.tracking [--server granian|uvicorn] [--rounds 3] [--duration 10]

What is measured, in the same run, rounds interleaved so a noisy neighbour hits both sides:

* ``nginx``: nginx (one worker process, its own config and prefix in a temporary folder, on a
  free port, never the system service) serving a static 43-byte GIF with no-cache headers.
* ``drip``: drip's real API app (``create_app``: the ASGI fast path of ``/t/o/TOKEN.gif`` and
  the hit writer) under granian or uvicorn, one process, on the default SQLite set-up in a
  temporary ``DRIP_HOME``. Every hit is stored: the writer thread stores its buffer every 0.25
  s and consumes what it stored (bot rules, open events).

Both are loaded by ``wrk`` with ``--connections`` connections for ``--duration`` seconds, with
a desktop mail client's User-Agent and the URL of a valid pixel (a sent message). After each
drip round the benchmark waits ``--durable-within`` seconds (the server still running) and
counts the rows stored in ``hits`` during the round: they must be at least the responses wrk
counted (a few more is normal: requests in flight when wrk stops are answered and stored, but
not counted). A last ``mix`` round (not in the ratio) sends a mix of 50 messages' pixels, 9%
unknown tokens, and scanner and Apple-proxy user agents, and checks the same count, the unknown
tokens by ``drip_tracking_unknown_tokens_total`` (they are counted, never stored).

The last line of output is one JSON object with ``ratio`` (median drip req/s over median nginx
req/s), the p99 latencies, and rows against responses.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Contact, Message, MessageState
from emails.links import open_token
from webhooks.routes.tracking import GIF

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-secret-key-0123456789abcdef"
MAIL_CLIENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
MESSAGES = 50
GOAL_RATIO = 0.5
GOAL_P99_MS = 20.0
MIN_ROUNDS = 3

#: nginx in the foreground with every path under ``{home}``, so it runs as any user from any
#: folder (also tests/drip/test_behind_nginx.py's proxy); the ``http`` block is left open
NGINX_PROLOGUE = """\
worker_processes 1;
daemon off;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {home}/tmp-body;
    proxy_temp_path {home}/tmp-proxy;
    fastcgi_temp_path {home}/tmp-fastcgi;
    uwsgi_temp_path {home}/tmp-uwsgi;
    scgi_temp_path {home}/tmp-scgi;
"""
NGINX_CONF = (
    NGINX_PROLOGUE
    + """\
    server {{
        listen 127.0.0.1:{port};
        root {home}/www;
        location /t/o/ {{
            default_type image/gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0";
            add_header Pragma "no-cache";
            add_header Expires "0";
            etag off;
            if_modified_since off;
            try_files /pixel.gif =404;
        }}
    }}
}}
"""
)

MIX_LUA = """\
local paths = {{{paths}}}
local agents = {{{agents}}}
local i = 0
request = function()
  i = i + 1
  local headers = {{}}
  headers["User-Agent"] = agents[(i % #agents) + 1]
  return wrk.format("GET", paths[(i * 7 % #paths) + 1], headers)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {within:.0f} s")


def tool(name: str) -> str:
    for folder in ("", "/usr/sbin/", "/usr/bin/"):
        path = folder + name
        if folder and Path(path).exists():
            return path
    found = subprocess.run(["which", name], capture_output=True, text=True).stdout.strip()
    if not found:
        raise SystemExit(f"`{name}` is not installed: apt-get install wrk nginx-light")
    return found


def seed(database_url: str) -> list[str]:
    """Migrate, then store MESSAGES sent messages (sent an hour ago); their pixel tokens."""
    engine = create_db_engine(database_url)
    migrate(engine)
    sent = datetime.now(UTC) - timedelta(hours=1)
    tokens = []
    with session_scope(engine) as session:
        for n in range(MESSAGES):
            contact = Contact(email=f"reader{n}@example.org")
            session.add(contact)
            session.flush()
            assert contact.id is not None
            message_id = str(uuid.UUID(int=n + 1))
            token = open_token(SECRET_KEY.encode(), message_id)
            session.add(
                Message(
                    id=message_id,
                    key=f"bench:{n}",
                    contact_id=contact.id,
                    campaign_id="welcome",
                    step_id="welcome",
                    workflow_id=f"journey/welcome/{contact.id}/1",
                    template="welcome",
                    state=MessageState.sent,
                    open_token=token,
                    created_at=sent,
                    sent_at=sent,
                )
            )
            tokens.append(token)
    engine.dispose()
    return tokens


def count_hits(db: Path) -> tuple[int, int]:
    """(rows, consumed rows) in ``hits``, read with a plain read-only connection."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows, consumed = conn.execute("SELECT count(*), count(consumed_at) FROM hits").fetchone()
    return int(rows), int(consumed)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, args: argparse.Namespace, *, script: Path | None = None) -> dict[str, float]:
    command = [
        tool("wrk"),
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-H",
        f"User-Agent: {MAIL_CLIENT}",
    ]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if rate is None or total is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "per_s": float(rate.group(1)),
        "responses": int(total.group(1)),
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": 1 if errors else 0,
    }


def start_nginx(home: Path, port: int) -> subprocess.Popen[bytes]:
    (home / "www").mkdir()
    (home / "www" / "pixel.gif").write_bytes(GIF)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(home=home, port=port, connections=4096))
    for path in (home, home / "www", home / "www" / "pixel.gif"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's worker may run as nobody
    command = [tool("nginx"), "-p", str(home), "-c", str(conf), "-e", str(home / "nginx.err")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "nginx")
    return proc


def start_drip(home: Path, port: int, server: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DRIP_HOME": str(home / "drip"),
        "DRIP_WORKSPACE": str(ROOT / "examples" / "acme"),
        "DRIP_SECRET_KEY": SECRET_KEY,
        # no Temporal here: the few routable opens are left to the (absent) worker's sweep
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "PYTHONPATH": str(ROOT),
    }
    target = "bench._tracking_app:app"
    if server == "granian":
        command = [
            str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws", "--log-level",
            "warning", "--no-access-log", target,
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc, f"drip under {server}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # both servers stop gracefully: lifespan flush
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking", description=__doc__)
    parser.add_argument(
        "--server",
        choices=("granian", "uvicorn"),
        default="granian" if importlib.util.find_spec("granian") else "uvicorn",
        help="granian when installed (pip install granian), else uvicorn",
    )
    parser.add_argument("--rounds", type=int, default=3, help=f"at least {MIN_ROUNDS} (3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--durable-within", type=float, default=1.0)
    parser.add_argument("--no-mix", action="store_true", help="skip the mixed-token round")
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drip-bench-tracking-") as folder:
        home = Path(folder)
        (home / "drip").mkdir()
        db = home / "drip" / "drip.db"
        tokens = seed(f"sqlite:///{db}")
        nginx_port, drip_port = free_port(), free_port()
        nginx = start_nginx(home, nginx_port)
        drip = start_drip(home, drip_port, args.server)
        try:
            print(
                f"bench.tracking: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
                f"{args.rounds} rounds; nginx 1 worker vs drip under {args.server} (1 process, "
                f"SQLite), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
                flush=True,
            )
            pixel = f"/t/o/{tokens[0]}.gif"
            for url in (
                f"http://127.0.0.1:{nginx_port}{pixel}",
                f"http://127.0.0.1:{drip_port}{pixel}",
            ):
                warm = subprocess.run(
                    [tool("wrk"), "-t1", "-c8", "-d2s", url], capture_output=True, text=True
                )
                if warm.returncode != 0:
                    raise SystemExit(f"warm-up failed: {warm.stderr}")
            time.sleep(args.durable_within)
            results: dict[str, list[dict[str, float]]] = {"nginx": [], "drip": []}
            for number in range(1, args.rounds + 1):
                results["nginx"].append(run_wrk(f"http://127.0.0.1:{nginx_port}{pixel}", args))
                before, _ = count_hits(db)
                r = run_wrk(f"http://127.0.0.1:{drip_port}{pixel}", args)
                time.sleep(args.durable_within)
                r["rows"] = count_hits(db)[0] - before
                results["drip"].append(r)
                n = results["nginx"][-1]
                print(
                    f"  round {number}: nginx {n['per_s']:,.0f}/s p99 {n['p99_ms']:.2f} ms | "
                    f"drip {r['per_s']:,.0f}/s p99 {r['p99_ms']:.2f} ms, "
                    f"{r['responses']:,.0f} responses, {r['rows']:,.0f} rows stored "
                    f"{args.durable_within:g} s later",
                    flush=True,
                )
            mix = None if args.no_mix else mix_round(home, db, drip_port, tokens, args)
            time.sleep(3)  # clicks settle; everything consumed
            rows, consumed = count_hits(db)
        finally:
            stop(drip)
            stop(nginx)
        final_rows, final_consumed = count_hits(db)
    report(results, mix, args, consumed=(consumed, rows), final=(final_consumed, final_rows))


def mix_round(
    home: Path, db: Path, port: int, tokens: list[str], args: argparse.Namespace
) -> dict[str, float]:
    paths = [f"/t/o/{t}.gif" for t in tokens] + [f"/t/o/{'x' * 24}{n}.gif" for n in range(5)]
    agents = [MAIL_CLIENT] * 6 + ["Mozilla/5.0", "Mozilla/5.0 (compatible; Barracuda Sentinel)"]
    script = home / "mix.lua"
    script.write_text(
        MIX_LUA.format(
            paths=", ".join(json.dumps(p) for p in paths),
            agents=", ".join(json.dumps(a) for a in agents),
        )
    )
    before, unknown_before = count_hits(db)[0], unknown_counted(port)
    r = run_wrk(f"http://127.0.0.1:{port}/", args, script=script)
    time.sleep(args.durable_within)
    r["rows"] = count_hits(db)[0] - before
    r["unknown"] = unknown_counted(port) - unknown_before
    print(
        f"  mix (50 messages, 9% unknown tokens, 25% machine agents): drip {r['per_s']:,.0f}/s "
        f"p99 {r['p99_ms']:.2f} ms, {r['responses']:,.0f} responses, {r['rows']:,.0f} rows "
        f"stored + {r['unknown']:,.0f} unknown tokens counted",
        flush=True,
    )
    return r


def unknown_counted(port: int) -> float:
    """``drip_tracking_unknown_tokens_total`` of the pixel, from the server's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "drip_tracking_unknown_tokens_total" and sample.labels["kind"] == "open"
    )


def report(
    results: dict[str, list[dict[str, float]]],
    mix: dict[str, float] | None,
    args: argparse.Namespace,
    *,
    consumed: tuple[int, int],
    final: tuple[int, int],
) -> None:
    med = {k: statistics.median(r["per_s"] for r in v) for k, v in results.items()}
    p99 = {k: statistics.median(r["p99_ms"] for r in v) for k, v in results.items()}
    per_round = [
        d["per_s"] / n["per_s"] for d, n in zip(results["drip"], results["nginx"], strict=True)
    ]
    ratio = med["drip"] / med["nginx"]
    responses = sum(int(r["responses"]) for r in results["drip"])
    rows = sum(int(r["rows"]) for r in results["drip"])
    lost_rounds = sum(1 for r in results["drip"] if r["rows"] < r["responses"])
    met = ratio >= GOAL_RATIO and p99["drip"] < GOAL_P99_MS and lost_rounds == 0
    print()
    print(f"{'side':<8}{'req/s':>10}{'p99 ms':>9}   rounds req/s")
    for k in ("nginx", "drip"):
        print(
            f"{k:<8}{med[k]:>10,.0f}{p99[k]:>9.2f}   "
            + ", ".join(f"{r['per_s']:,.0f}" for r in results[k])
        )
    print(
        f"ratio {ratio:.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f}); drip stored "
        f"{rows:,} rows for {responses:,} responses ({lost_rounds} rounds short); consumed "
        f"{consumed[0]:,} of {consumed[1]:,} while running, {final[0]:,} of {final[1]:,} after "
        f"shutdown; goal ratio >= {GOAL_RATIO} and p99 < {GOAL_P99_MS:.0f} ms, none lost: "
        + ("met" if met else "NOT met")
    )
    summary = {
        "bench": "tracking",
        "server": args.server,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "nginx_per_s": round(med["nginx"]),
        "drip_per_s": round(med["drip"]),
        "ratio": round(ratio, 3),
        "ratio_min": round(min(per_round), 3),
        "ratio_max": round(max(per_round), 3),
        "nginx_p99_ms": round(p99["nginx"], 2),
        "drip_p99_ms": round(p99["drip"], 2),
        "drip_responses": responses,
        "drip_rows": rows,
        "rounds_short": lost_rounds,
        "non_2xx": int(sum(r["non_2xx"] for r in results["drip"])),
        "mix_per_s": round(mix["per_s"]) if mix else None,
        "mix_p99_ms": round(mix["p99_ms"], 2) if mix else None,
        "mix_responses": int(mix["responses"]) if mix else None,
        "mix_rows": int(mix["rows"]) if mix else None,
        "mix_unknown_counted": int(mix["unknown"]) if mix else None,
        "consumed_after_shutdown": final[0],
        "rows_after_shutdown": final[1],
        "goal_ratio": GOAL_RATIO,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": met,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
