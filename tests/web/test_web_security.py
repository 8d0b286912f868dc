"""The web servers' rules, over raw HTTP: files only from their folder, localhost only
unless a login token is given, no cross-site changes, TLS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.request

import pytest

import dispy.httpd

pytestmark = pytest.mark.timeout(60)


def raw(host: str, port: int, request: str, tls: ssl.SSLContext | None = None
        ) -> tuple[int, dict, bytes]:
    """Send ``request`` exactly as written (no client-side path normalisation)."""
    sock = socket.create_connection((host, port), timeout=10)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    with sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str, host: str = "127.0.0.1", headers: str = "",
        host_header: str | None = None) -> tuple[int, dict, bytes]:
    hh = host_header or f"localhost:{port}"
    return raw(host, port, f"GET {path} HTTP/1.1\r\nHost: {hh}\r\n{headers}"
                           "Connection: close\r\n\r\n")


def post(port: int, path: str, body: dict, headers: str = "", host: str = "127.0.0.1",
         host_header: str | None = None, ctype: str = "application/json"
         ) -> tuple[int, dict, bytes]:
    data = json.dumps(body)
    hh = host_header or f"localhost:{port}"
    return raw(host, port, f"POST {path} HTTP/1.1\r\nHost: {hh}\r\nContent-Type: {ctype}\r\n"
                           f"Content-Length: {len(data)}\r\n{headers}Connection: close\r\n\r\n"
                           f"{data}")


@pytest.fixture
def server():
    srv = dispy.httpd.DispyHTTPServer(None, port=0, poll_sec=5)
    yield srv
    srv.shutdown(wait=False)


TRAVERSALS = [
    "/../../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
    "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/dispy.js/../../../etc/passwd",
    "/static/../../server.py", "/..%5c..%5cserver.py", "/%252e%252e/etc/passwd",
    "/....//....//etc/passwd", "/.%2e/.%2e/web/server.py", "/%2e%2e/server.py",
    "/%2e%2e/monitor.py", "/..%2fmonitor.py", "/__init__.py", "/.hidden.html",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_files_outside_the_package_folder(server, path):
    status, _, body = get(server.port, path)
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body and b"import" not in body


def test_pages_and_scripts_are_served(server):
    for path, kind in (("/", "text/html"), ("/manage", "text/html"), ("/dispy.js",
                                                                      "text/javascript"),
                       ("/dispy.css", "text/css"), ("/node.html", "text/html")):
        status, headers, _ = get(server.port, path)
        assert status == 200 and headers["content-type"][0].startswith(kind), path
        assert "frame-ancestors 'none'" in headers["content-security-policy"][0]


def test_localhost_only_by_default(server):
    """host='' binds localhost (the original bound every interface) and answers only to
    Host: localhost (no DNS rebinding)."""
    assert server.web.host == "127.0.0.1" and server.token is None
    status, _, body = get(server.port, "/api/state", host_header=f"evil.example:{server.port}")
    assert status == 403 and b"localhost" in body
    assert get(server.port, "/api/state", host_header=f"127.0.0.1:{server.port}")[0] == 200


def test_cross_site_changes_refused(server):
    own = f"Origin: http://localhost:{server.port}\r\n"
    assert post(server.port, "/api/settings", {"poll_sec": 3}, own)[0] == 200
    assert server.poll_sec == 3
    for headers in ("", "Origin: http://evil.example\r\n",
                    "Referer: http://evil.example/page\r\n",
                    f"Origin: http://localhost:{server.port}.evil.example\r\n"):
        status, _, body = post(server.port, "/api/settings", {"poll_sec": 9}, headers)
        assert status == 403 and b"cross-site" in body, headers
    assert post(server.port, "/api/settings", {"poll_sec": 9},
                f"Referer: http://localhost:{server.port}/manage\r\n")[0] == 200
    status, _, _ = post(server.port, "/api/settings", {"poll_sec": 5}, own,
                        ctype="application/x-www-form-urlencoded")
    assert status == 415
    assert server.poll_sec == 9
    status, _, body = post(server.port, "/api/settings", {"poll_sec": "x"}, own)
    assert status == 400 and b"poll_sec" in body


def test_login_token_elsewhere():
    """Bound beyond localhost, every request needs the token printed at start; it is
    taken once from ?token= and kept in a cookie."""
    srv = dispy.httpd.DispyHTTPServer(None, host="127.0.0.2", port=0, poll_sec=5)
    try:
        port, token = srv.port, srv.token
        assert token and srv.url.endswith(f"?token={token}")
        hh = f"127.0.0.2:{port}"
        assert get(port, "/", "127.0.0.2", host_header=hh)[0] == 401
        assert get(port, "/?token=wrong", "127.0.0.2", host_header=hh)[0] == 401
        status, headers, _ = get(port, f"/manage?token={token}", "127.0.0.2", host_header=hh)
        assert status == 302 and headers["location"] == ["/manage"]
        cookie = headers["set-cookie"][0].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"][0] and "SameSite=Strict" in \
            headers["set-cookie"][0]
        assert get(port, "/api/state", "127.0.0.2", f"Cookie: {cookie}\r\n",
                   host_header=hh)[0] == 200
        own = f"Origin: http://{hh}\r\n"
        assert post(port, "/api/settings", {"poll_sec": 2}, own, "127.0.0.2",
                    host_header=hh)[0] == 401
        assert post(port, "/api/settings", {"poll_sec": 2}, f"Cookie: {cookie}\r\n",
                    "127.0.0.2", host_header=hh)[0] == 403
        assert post(port, "/api/settings", {"poll_sec": 2}, f"Cookie: {cookie}\r\n{own}",
                    "127.0.0.2", host_header=hh)[0] == 200
    finally:
        srv.shutdown(wait=False)


def test_tls(tmp_path):
    cert = tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(cert), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    srv = dispy.httpd.DispyHTTPServer(None, port=0, certfile=str(cert))
    try:
        assert srv.url.startswith("https://localhost:")
        ctx = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(srv.url + "api/config", context=ctx, timeout=10) as r:
            assert json.load(r)["app"] == "httpd"
        with pytest.raises((IndexError, OSError)):
            get(srv.port, "/api/config")  # plain HTTP is not spoken
    finally:
        srv.shutdown(wait=False)
