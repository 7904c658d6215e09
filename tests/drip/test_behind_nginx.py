"""drip behind a real nginx, under both servers ``drip api`` runs (granian, uvicorn).

nginx runs from a temporary prefix on free ports, never as the system service, with the location
block docs/operations.md shows ("Behind a reverse proxy"): a TLS listener (a trustme CA) and a plain
one, ``X-Forwarded-For $proxy_add_x_forwarded_for`` and ``X-Forwarded-Proto $scheme``, or the RFC
7239 ``Forwarded`` variant. It connects to drip from ``127.0.0.10`` (``proxy_bind``), so trusting it
is trusting that one address, not "loopback". Visitors are told apart by the loopback address they
connect from (127.0.0.2, 127.0.0.3, ::1), the way nginx sees them.

What must hold: each visitor has their own form limit, the consent IP and the tracking hit's IP
are the visitor's, https at nginx is https in drip (a ``Secure`` session cookie, https in the
absolute URLs drip makes), and forwarding headers a visitor forges (through nginx, or straight to
drip) change nothing. With no proxy trusted (the default) everyone behind nginx is nginx.
Without nginx these tests skip, saying how to get it (with ``DRIP_REQUIRE_SYSTEM_TOOLS=1``, as
in CI, they fail instead).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trustme
from sqlalchemy.engine import Engine

from bench.tracking import NGINX_PROLOGUE
from contacts import repository, users
from contacts.db import create_db_engine, session_scope
from tests.support import (
    EXAMPLES,
    MAIL_CLIENT,
    ROOT,
    free_port,
    missing_system_tool,
    sent_message,
    venv_binary,
)

STARTUP_SECONDS = 30.0
SECRET_KEY = "nginx-test-secret-key-0123456789abcdef"
#: the address nginx connects to drip from: the only one drip is told to trust
NGINX_ADDRESS = "127.0.0.10"
ANN, BOB, CY = "127.0.0.2", "127.0.0.3", "127.0.0.4"
BOT = {"email": "bot@example.com", "consent": "yes", "website": "spam"}  # the honeypot
Headers = Mapping[str, str]
NONE: Headers = {}
PASSWORD = "correct horse battery staple"
FORGED = {
    "x-forwarded-for": "198.51.100.9",
    "x-forwarded-proto": "https",
    "forwarded": "for=198.51.100.9;proto=https",
    "x-real-ip": "198.51.100.9",
}

#: what the docs show, with the upstream (and, for the test, nginx's own address) filled in
LOCATION_X_FORWARDED = """\
        location / {{
            proxy_pass http://{upstream};
            proxy_bind {bind};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
"""
LOCATION_FORWARDED = """\
        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $http_host;
            proxy_set_header Forwarded "for=$drip_forwarded_for;proto=$scheme";
        }}
"""
#: RFC 7239 wants an IPv6 address quoted and in brackets
FORWARDED_MAP = """\
    map $remote_addr $drip_forwarded_for {
        ~:       "\\"[$remote_addr]\\"";
        default  $remote_addr;
    }
"""
NGINX_CONF = (
    NGINX_PROLOGUE
    + """\
{map}
    server {{
        listen 127.0.0.1:{https_port} ssl;
        listen [::1]:{https_port} ssl;
        listen 127.0.0.1:{http_port};
        ssl_certificate {home}/cert.pem;
        ssl_certificate_key {home}/key.pem;
{location}
    }}
}}
"""
)


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        missing_system_tool(
            "nginx is not installed (Debian package 'nginx-light'; `bash .ci/run` installs it)"
        )
    return found


def _wait_until_listening(
    host: str, port: int, proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{_read(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not listen on {host}:{port} in time:\n{_read(log)}")
        time.sleep(0.05)


def _wait_until_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"drip api exited with {proc.returncode}:\n{_read(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"drip api did not answer /healthz in time:\n{_read(log)}")
        time.sleep(0.05)


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@dataclass
class Stack:
    """A running drip behind a running nginx."""

    https: str  # nginx's TLS listener
    http: str  # nginx's plain listener
    https_v6: str  # nginx's TLS listener on ::1
    direct: str  # drip itself, bypassing nginx
    ca: trustme.CA
    db: Engine

    def visitor(self, address: str) -> httpx.Client:
        """A browser on ``address`` (connecting from it, as nginx will see it)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        transport = httpx.HTTPTransport(local_address=address, verify=context)
        return httpx.Client(transport=transport, timeout=10, headers={"user-agent": MAIL_CLIENT})


Start = Callable[..., Stack]


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[Start]:
    """Start ``drip api --server SERVER`` with ``DRIP_*`` overrides, and nginx in front of it
    (``forwarded=True``: the ``Forwarded`` variant, drip on ``::1``)."""
    nginx = _nginx()
    started: list[subprocess.Popen[bytes]] = []
    engines: list[Engine] = []
    # nginx's worker runs as nobody when we are root: its prefix must be readable by it (the
    # pytest tmp_path's parents are not)
    home = Path(tempfile.mkdtemp(prefix="drip-nginx-"))
    home.chmod(0o755)

    def start(server: str, *, forwarded: bool = False, **env: str) -> Stack:
        drip_host = "::1" if forwarded else "127.0.0.1"
        drip_port = free_port()
        drip_log = tmp_path / f"api-{drip_port}.log"
        with drip_log.open("wb") as out:
            proc = subprocess.Popen(
                [venv_binary("drip"), "api", "--server", server],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
                    "DRIP_HOME": str(tmp_path / ".drip"),
                    "DRIP_WORKSPACE": str(EXAMPLES),
                    "DRIP_SECRET_KEY": SECRET_KEY,
                    "DRIP_API_HOST": drip_host,
                    "DRIP_API_PORT": str(drip_port),
                    "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # none: the sweep routes
                    **env,
                },
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        upstream = f"[::1]:{drip_port}" if forwarded else f"127.0.0.1:{drip_port}"
        _wait_until_healthy(f"http://{upstream}", proc, drip_log)

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "::1")
        cert.private_key_pem.write_to_path(str(home / "key.pem"))
        (home / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        https_port, http_port = free_port(), free_port()
        location = LOCATION_FORWARDED if forwarded else LOCATION_X_FORWARDED
        conf = home / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                home=home,
                connections=64,
                https_port=https_port,
                http_port=http_port,
                map=FORWARDED_MAP if forwarded else "",
                location=location.format(upstream=upstream, bind=NGINX_ADDRESS),
            )
        )
        nginx_log = home / "nginx.err"
        proc = subprocess.Popen(
            [nginx, "-p", str(home), "-c", str(conf), "-e", str(nginx_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        _wait_until_listening("127.0.0.1", https_port, proc, "nginx", home / "nginx-error.log")
        db = create_db_engine(f"sqlite:///{tmp_path / '.drip' / 'drip.db'}")
        engines.append(db)
        return Stack(
            https=f"https://127.0.0.1:{https_port}",
            http=f"http://127.0.0.1:{http_port}",
            https_v6=f"https://[::1]:{https_port}",
            direct=f"http://[::1]:{drip_port}" if forwarded else f"http://127.0.0.1:{drip_port}",
            ca=ca,
            db=db,
        )

    yield start
    for db in engines:
        db.dispose()
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(home, ignore_errors=True)


def _post(
    http: httpx.Client, base: str, body: dict[str, str] = BOT, headers: Headers = NONE
) -> httpx.Response:
    return http.post(f"{base}/forms/newsletter", json=body, headers=headers)


def _signup(http: httpx.Client, base: str, email: str, headers: Headers = NONE) -> None:
    r = _post(http, base, {"email": email, "consent": "yes"}, headers)
    assert r.status_code == 202, r.text


def _consent_ip(db: Engine, email: str) -> str | None:
    with session_scope(db) as s:
        contact = repository.get_contact_by_email(s, email)
        assert contact is not None
        return contact.consent_ip


def _hit_ips(db: Engine, count: int) -> list[str]:
    """The IPs of the first ``count`` tracking hits, once the API's hit writer stored them."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        with db.connect() as c:
            ips = list(c.execute(sa.text("SELECT ip FROM hits ORDER BY id")).scalars())
        if len(ips) >= count or time.monotonic() > deadline:
            return ips
        time.sleep(0.05)


def _session_cookie(http: httpx.Client, base: str, email: str, headers: Headers = NONE) -> str:
    """Sign in through ``base``; the ``Set-Cookie`` of the session."""
    http.cookies.clear()
    page = http.get(f"{base}/dashboard/login", headers=headers)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    # the form's token is also its cookie's value; sent by hand, as the cookie is Secure when
    # the visitor is on https (and a client's jar keeps it off plain http)
    r = http.post(
        f"{base}/dashboard/login",
        data={"email": email, "password": PASSWORD, "csrf_token": found[1]},
        headers={**headers, "cookie": f"drip_login_csrf={found[1]}"},
    )
    assert r.status_code == 303, r.text
    return next(c for c in r.headers.get_list("set-cookie") if c.startswith("drip_session="))


def _secure(set_cookie: str) -> bool:
    return "secure" in [part.strip().lower() for part in set_cookie.split(";")]


def _make_user(db: Engine) -> str:
    email = "ops@example.com"
    with session_scope(db) as s:
        users.create_user(s, email, PASSWORD, "admin")
    return email


SERVERS = pytest.mark.parametrize("server", ["granian", "uvicorn"])


@SERVERS
def test_each_visitor_behind_nginx_has_their_own_limit_and_address(
    behind_nginx: Start, server: str
) -> None:
    stack = behind_nginx(server, DRIP_TRUSTED_PROXIES=f'["{NGINX_ADDRESS}"]')
    with stack.visitor(ANN) as ann, stack.visitor(BOB) as bob:
        # a forged X-Forwarded-For is left of what nginx appends: Ann stays Ann, whatever it says
        codes = [
            _post(ann, stack.https, headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code
            for n in range(11)
        ]
        assert codes == [202] * 10 + [429]
        _signup(bob, stack.https, "bob@example.com")  # Ann's limit is not Bob's
        _signup(bob, stack.http, "bob.plain@example.com")
        token = sent_message(stack.db, SECRET_KEY.encode())
        assert bob.get(f"{stack.https}/t/o/{token}.gif", headers=FORGED).status_code == 200
    assert _consent_ip(stack.db, "bob@example.com") == BOB
    assert _consent_ip(stack.db, "bob.plain@example.com") == BOB
    assert _hit_ips(stack.db, 1) == [BOB]


@SERVERS
def test_https_at_nginx_is_https_in_drip(behind_nginx: Start, server: str) -> None:
    stack = behind_nginx(server, DRIP_TRUSTED_PROXIES=f'["{NGINX_ADDRESS}"]')
    email = _make_user(stack.db)
    with stack.visitor(ANN) as ann:
        assert _secure(_session_cookie(ann, stack.https, email))
        assert not _secure(_session_cookie(ann, stack.http, email))
        # an absolute URL drip makes (the redirect that drops a trailing slash) is the visitor's
        r = ann.get(f"{stack.https}/dashboard/login/")
        assert r.status_code == 307
        assert r.headers["location"] == f"{stack.https}/dashboard/login"
        r = ann.get(f"{stack.http}/dashboard/login/", headers=FORGED)
        assert r.headers["location"] == f"{stack.http}/dashboard/login"


@SERVERS
def test_forged_headers_straight_to_drip_change_nothing(behind_nginx: Start, server: str) -> None:
    """nginx is trusted, but a client that reaches drip itself is not nginx."""
    stack = behind_nginx(server, DRIP_TRUSTED_PROXIES=f'["{NGINX_ADDRESS}"]')
    email = _make_user(stack.db)
    with stack.visitor(CY) as cy:
        _signup(cy, stack.direct, "cy@example.com", {**FORGED, "x-forwarded-for": BOB})
        codes = [
            _post(
                cy,
                stack.direct,
                headers={**FORGED, "x-forwarded-for": f"{NGINX_ADDRESS}, 192.0.2.{n}"},
            ).status_code
            for n in range(10)
        ]
        assert codes == [202] * 9 + [429]
        token = sent_message(stack.db, SECRET_KEY.encode())
        assert cy.get(f"{stack.direct}/t/o/{token}.gif", headers=FORGED).status_code == 200
        assert not _secure(_session_cookie(cy, stack.direct, email, FORGED))
        r = cy.get(f"{stack.direct}/dashboard/login/", headers=FORGED)
        assert r.headers["location"] == f"{stack.direct}/dashboard/login"
    assert _consent_ip(stack.db, "cy@example.com") == CY
    assert _hit_ips(stack.db, 1) == [CY]


@SERVERS
def test_with_no_proxy_trusted_everyone_behind_nginx_is_nginx(
    behind_nginx: Start, server: str
) -> None:
    """The default (``DRIP_TRUSTED_PROXIES`` empty) is the safe one: drip believes no header,
    so behind a proxy every visitor shares the proxy's address and limit until it is set."""
    stack = behind_nginx(server)
    email = _make_user(stack.db)
    with stack.visitor(ANN) as ann, stack.visitor(BOB) as bob:
        _signup(bob, stack.https, "bob@example.com")
        codes = [_post((ann, bob)[n % 2], stack.https).status_code for n in range(10)]
        assert codes == [202] * 9 + [429]
        # over https at nginx, yet drip cannot know: the cookie is Secure only by
        # DRIP_PUBLIC_BASE_URL (http here)
        assert not _secure(_session_cookie(ann, stack.https, email))
    with stack.visitor(CY) as cy:
        _signup(cy, stack.direct, "cy@example.com")
    assert _consent_ip(stack.db, "bob@example.com") == NGINX_ADDRESS
    assert _consent_ip(stack.db, "cy@example.com") == CY  # nothing in front: the peer


@SERVERS
def test_the_forwarded_header_and_ipv6(behind_nginx: Start, server: str) -> None:
    """RFC 7239 ``Forwarded`` from nginx, drip on ``[::1]`` behind it, a visitor on IPv6."""
    stack = behind_nginx(
        server, forwarded=True, DRIP_TRUSTED_PROXIES='["::1"]', DRIP_PROXY_HEADER="forwarded"
    )
    email = _make_user(stack.db)
    with stack.visitor("::1") as six, stack.visitor(ANN) as ann, stack.visitor(BOB) as bob:
        # nginx replaces a forged Forwarded and passes X-Forwarded-For through, unread
        codes = [_post(ann, stack.https, headers=FORGED).status_code for _ in range(11)]
        assert codes == [202] * 10 + [429]
        _signup(six, stack.https_v6, "six@example.com", FORGED)
        _signup(bob, stack.http, "bob@example.com", FORGED)
        assert _secure(_session_cookie(six, stack.https_v6, email))
        assert not _secure(_session_cookie(bob, stack.http, email, FORGED))
        token = sent_message(stack.db, SECRET_KEY.encode())
        assert six.get(f"{stack.https_v6}/t/o/{token}.gif").status_code == 200
    assert _consent_ip(stack.db, "six@example.com") == "::1"
    assert _consent_ip(stack.db, "bob@example.com") == BOB
    assert _hit_ips(stack.db, 1) == ["::1"]


def test_the_docs_show_the_tested_nginx_config() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    section = page.split("## Behind a reverse proxy", 1)[1].split("\n## ", 1)[0]
    for template in (LOCATION_X_FORWARDED, LOCATION_FORWARDED, FORWARDED_MAP):
        for line in template.splitlines():
            if line.strip().startswith(("proxy_set_header", "map ", "~:", "default")):
                assert line.strip() in section, line
