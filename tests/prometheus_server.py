"""A real Prometheus (Debian's package) scraping one of our servers every second, on loopback."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fraud.processes import free_port

DEADLINE_SECONDS = 120.0


def prometheus_api(url: str, query: str) -> list[dict]:
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(address, timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


@contextmanager
def prometheus_scraping(target_url: str, root: Path, job: str = "fraud-detector") -> Iterator[str]:
    """Prometheus scraping `target_url` (http://host:port, path /metrics) as `job`; yields its URL once
    the target is up. A missing `prometheus` binary fails: `make test` installs it."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (Debian package `prometheus`; `make test` installs it)"
    root.mkdir(parents=True, exist_ok=True)
    target = target_url.removeprefix("http://")
    (root / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    with open(root / "prometheus.log", "wb") as log:
        process = subprocess.Popen([binary, f"--config.file={root / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            assert process.poll() is None, (root / "prometheus.log").read_text()[-2000:]
            try:
                if prometheus_api(url, f'up{{job="{job}"}} == 1'):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped the target"
            time.sleep(0.25)  # between polls of the Prometheus API
        yield url
    finally:
        process.terminate()
        process.wait(30)
