"""deploy/nginx/rerankd.conf: limits and timeouts match the server's; where nginx and openssl are installed,
`nginx -t` accepts the file as shipped and a real nginx proxies TLS requests to a running rerankd.

nginx is not part of the test set-up (scripts/test.sh does not install it): without it those tests skip."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from deploy_support import NGINX_CONF, ImageProcess
from helpers import free_port

from rerankd.settings import Settings

needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None, reason="nginx or openssl is not installed"
)
CONF = NGINX_CONF.read_text(encoding="utf-8")


def _directive(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{name}\s+([^;{{}}\n]*);", CONF, re.MULTILINE)]


def _nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_body_limit_is_the_servers_max_body_bytes() -> None:
    (size,) = _directive("client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == Settings().max_body_bytes


def test_proxy_timeouts_outlast_the_request_timeout() -> None:
    request_timeout = Settings().request_timeout
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directive(name)
        assert _nginx_seconds(value) > request_timeout, name


def test_upstream_keeps_connections_alive_and_tls_is_on() -> None:
    assert _directive("keepalive") and _directive("proxy_http_version") == ["1.1"]
    assert 'proxy_set_header Connection ""' in CONF
    assert any("443 ssl" in v for v in _directive("listen"))
    assert _directive("ssl_certificate") and _directive("ssl_certificate_key")
    (upstream,) = _directive("server")
    assert upstream.split()[0].endswith(f":{Settings().port}")


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected one {old!r} in {NGINX_CONF.name}"
    return text.replace(old, new)


def _nginx_conf(directory: Path, site: str) -> Path:
    """A main nginx.conf that includes `site` in http {}, with every path nginx writes under `directory`."""
    cert, key = _certificate(directory)
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    (directory / "rerankd.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = directory / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} notice;\nevents {{}}\n"
        + f"http {{\n    access_log off;\n{temp}\n    include {directory / 'rerankd.conf'};\n}}\n"
    )
    return main


@needs_nginx
def test_nginx_accepts_the_config_as_shipped(tmp_path: Path) -> None:
    main = _nginx_conf(tmp_path, CONF)
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"nginx exited with {process.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port} within {timeout} s")


@needs_nginx
def test_nginx_proxies_tls_requests_to_rerankd(tmp_path: Path, pod: ImageProcess) -> None:
    http_port, https_port = free_port(), free_port()
    site = _replace_once(CONF, "server 127.0.0.1:8080;", f"server 127.0.0.1:{pod.env['RERANKD_PORT']};")
    site = _replace_once(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = _replace_once(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = re.sub(r"^\s*listen \[::\].*$", "", site, flags=re.MULTILINE)  # the test host may lack IPv6
    main = _nginx_conf(tmp_path, site)
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(https_port, nginx)
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        assert redirect.status_code == 301 and redirect.headers["location"].startswith("https://")
        key = pod.api_keys[0]  # type: ignore[attr-defined]
        with httpx.Client(base_url=f"https://127.0.0.1:{https_port}", verify=False, timeout=30) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/ready").status_code == 200
            body = {"query": "What do giant pandas eat?", "documents": ["Pandas eat bamboo.", "Orange chicken."]}
            answer = client.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}",
                                                                   "X-Request-Id": "nginx-test-1"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == "nginx-test-1"  # passed through both ways
            assert client.get("/metrics").status_code == 403  # not public
            too_big = client.post("/v1/rerank", content=b"x" * (Settings().max_body_bytes + 1),
                                  headers={"Content-Type": "application/json"})
            assert too_big.status_code == 413 and "nginx" in too_big.text  # refused before rerankd
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(10)
