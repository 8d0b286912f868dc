"""dispyadmin in a real browser: nodes found and added, secrets, service times, CPUs,
clients to serve; and its command line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from selenium.webdriver.common.by import By

from .conftest import cell, click, fill, screenshot, texts, wait_until

pytestmark = pytest.mark.timeout(90)


class Admin:
    def __init__(self, proc: subprocess.Popen, out: Path) -> None:
        self.proc = proc
        self.out = out
        self.url = ""

    def output(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture
def dispyadmin(tmp_path):
    procs = []

    def start(*args: str, wait: bool = True) -> Admin:
        out = tmp_path / f"dispyadmin-{len(procs)}.log"
        with open(out, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dispy.dispyadmin", "--info_port", str(free_port()),
                 "--http_port", str(free_port()), "-i", "127.0.0.1", "--daemon", *args],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        admin = Admin(proc, out)
        procs.append(admin)
        if wait:
            found = wait_until("dispyadmin's address", lambda: re.search(
                r"open (https?://\S+)", admin.output()) or proc.poll() is not None)
            assert proc.poll() is None, admin.output()
            admin.url = found.group(1)
        return admin

    yield start
    for admin in procs:
        if admin.proc.poll() is None:
            admin.proc.send_signal(signal.SIGTERM)
            try:
                admin.proc.wait(10)
            except subprocess.TimeoutExpired:
                admin.proc.kill()
                admin.proc.wait(5)




@pytest.mark.web
def test_admin_cluster_page(page, dispyadmin, node_factory, tmp_path):
    """Found and added nodes; details only where the admin secret matches; set a secret
    (with Show); sort; service time and CPUs of the selected nodes; charts; login token."""
    a = node_factory("-c", "2", "--name", "alpha", "-s", "cs", "--admin_secret", "sa")
    b = node_factory("-c", "2", "--name", "beta", "--admin_secret", "sb")
    ka, kb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    admin = dispyadmin("--node_port", str(a.port), "--secret", "sa", "--poll_interval", "1",
                       "--ping_interval", "2", "--http_host", "127.0.0.2")
    assert "?token=" in admin.url  # bound beyond localhost: a login token is needed
    page.get(admin.url)
    wait_until("alpha found with details", lambda: cell(page, "node-table", ka, "admin") ==
               "yes" and cell(page, "node-table", ka, "memory").endswith("B"))
    # beta is elsewhere (another port): add it by host and port
    fill(page, "#add-host", "127.0.0.1")
    fill(page, "#add-port", str(b.port))
    click(page, "#add")
    wait_until("beta shown without details", lambda: cell(page, "node-table", kb, "name")
               == "beta")
    assert cell(page, "node-table", kb, "admin") == "no"
    assert cell(page, "node-table", kb, "memory") == "-"
    # its admin secret, shown in clear first
    fill(page, "#secret", "sb")
    assert page.find_element(By.ID, "secret").get_attribute("type") == "password"
    click(page, "#show-secret")
    assert page.find_element(By.ID, "secret").get_attribute("type") == "text"
    click(page, "#set-secret")
    wait_until("beta matched", lambda: cell(page, "node-table", kb, "admin") == "yes")
    assert page.find_element(By.ID, "secret").get_attribute("value") == ""
    # sorted by IP address (and port) at first; a click sorts the other way, another back
    click(page, "#node-table th[data-key=ip_addr]")
    order = sorted([ka, kb], key=lambda k: int(k.split(":")[1]))
    wait_until("sorted", lambda: [r.get_attribute("data-key") for r in page.find_elements(
        By.CSS_SELECTOR, "#node-table tbody tr")] == order[::-1])
    click(page, "#node-table th[data-key=ip_addr]")
    wait_until("sorted back", lambda: [r.get_attribute("data-key") for r in page.find_elements(
        By.CSS_SELECTOR, "#node-table tbody tr")] == order)
    # CPUs of alpha: 1
    click(page, f"#node-table tr[data-key='{ka}'] input.select")
    fill(page, "#cpus", "1")
    click(page, "#set-cpus")
    wait_until("alpha uses 1 CPU", lambda: cell(page, "node-table", ka, "cpus") == "1")
    a.wait_for("now using 1 CPUs")
    # service times of beta only: start two hours ago, stop now
    click(page, f"#node-table tr[data-key='{ka}'] input.select")  # deselect alpha
    click(page, f"#node-table tr[data-key='{kb}'] input.select")
    start = f"{(time.localtime().tm_hour + 22) % 24:02d}:00"
    page.find_element(By.CSS_SELECTOR, "#service-control option[value=start]").click()
    fill(page, "#service-time", start)
    click(page, "#set-service")
    wait_until("start kept", lambda: f"start {start}" in cell(page, "node-table", kb,
                                                               "service"))
    page.find_element(By.CSS_SELECTOR, "#service-control option[value=stop]").click()
    click(page, "#service-now")
    click(page, "#set-service")
    wait_until("stop set", lambda: "stop" in cell(page, "node-table", kb, "service"))
    b.wait_for("not accepting jobs")
    assert "stop" not in cell(page, "node-table", ka, "service")
    # summary and the jobs chart
    assert texts(page, "#summary-table td[data-col=nodes]") == ["2"]
    wait_until("jobs chart", lambda: len(page.find_elements(
        By.CSS_SELECTOR, "#chart-jobs polyline.series")) == 2)
    screenshot(page, tmp_path / "admin.png")


@pytest.mark.web
def test_admin_node_page(page, dispyadmin, node_factory, tmp_path):
    """One node: details, poll Now, CPUs (All), and clients to serve: 0 ends the node."""
    a = node_factory("-c", "1", "--name", "alpha", "--admin_secret", "sa")
    key = f"127.0.0.1:{a.port}"
    admin = dispyadmin("--node_port", str(a.port), "--secret", "sa", "--poll_interval", "30")
    assert "token" not in admin.url  # localhost: no token
    page.get(admin.url + f"admin_node?node={key}")
    wait_until("node details", lambda: cell(page, "node-info", key, "name") == "alpha")
    assert cell(page, "node-info", key, "serve") == "forever"
    assert cell(page, "node-info", key, "cpus") == "1"
    click(page, "#cpus-all")
    click(page, "#set-cpus")
    a.wait_for("dispyadmin set CPUs to")
    fill(page, "#poll", "5")
    click(page, "#set-poll")
    wait_until("poll interval", lambda: "every 5" in page.find_element(By.ID, "message").text)
    click(page, "#poll-now")
    wait_until("polled", lambda: page.find_element(By.ID, "message").text == "polled")
    wait_until("jobs chart", lambda: page.find_elements(By.CSS_SELECTOR,
                                                        "#chart-jobs polyline.series"))
    screenshot(page, tmp_path / "admin_node.png")
    fill(page, "#serve", "0")
    click(page, "#set-serve")
    a.proc.wait(15)  # served all it was told to: dispynode quits
    assert "no more clients to serve" in a.output()


def test_dispyadmin_options_and_config(tmp_path, dispyadmin):
    """Every option of dispyadmin.txt parses; --save_config / --config round trip; bad
    values are refused with the option named."""
    cfg = tmp_path / "admin.cfg"
    argv = [sys.executable, "-m", "dispy.dispyadmin", "--secret", "s", "-i", "127.0.0.1",
            "--http_host", "localhost", "--http_port", "8282", "--info_port", "9700",
            "--node_port", "9701", "--poll_interval", "7", "--ping_interval", "99",
            "--ipv4_udp_multicast", "-d", "--save_config", str(cfg)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = cfg.read_text()
    for line in ('[dispyadmin]', 'secret = "s"', "http_port = 8282", "poll_interval = 7.0",
                 "ipv4_udp_multicast = true", 'hosts = ["127.0.0.1"]'):
        assert line in text, text
    from dispy.web.admin_cli import parse

    opts = parse(["--config", str(cfg), "--poll_interval", "3"])
    assert (opts.secret, opts.http_port, opts.poll_interval, opts.ping_interval,
            opts.node_port, opts.info_port) == ("s", 8282, 3.0, 99.0, 9701, 9700)
    for bad, msg in ((["--poll_interval", "0"], "--poll_interval"),
                     (["--keyfile", "k"], "--keyfile needs --certfile"),
                     (["--http_port", "70000"], "--http_port")):
        out = subprocess.run([sys.executable, "-m", "dispy.dispyadmin", *bad],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and msg in out.stderr, out.stderr
    # the script names of the original work too
    assert subprocess.run([str(Path(sys.executable).parent / "dispyadmin.py"), "--help"],
                          capture_output=True, timeout=30).returncode == 0
