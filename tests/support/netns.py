"""A peer that is not loopback: a network namespace joined to this one by a veth pair.

The test's side of the pair gets ``169.254.N.M+1/30`` and the namespace ``169.254.N.M+2``
(link-local, chosen from the process id so engineers running tests side by side do not collide);
a server bound to :attr:`RemotePeer.host_address` sees requests sent with :meth:`RemotePeer.request`
come from :attr:`RemotePeer.peer_address`. No traffic leaves the pair. Both are removed on exit.

Needs root and iproute2 (``ip netns``); :func:`remote_peer` skips the test when they are missing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

_COUNTER = itertools.count()

#: Run inside the namespace: one HTTP request, its answer printed as JSON.
_CLIENT = """
import http.client, json, sys
spec = json.loads(sys.argv[1])
connection = http.client.HTTPConnection(spec["host"], spec["port"], timeout=spec["timeout"])
body = spec["body"].encode() if spec["body"] is not None else None
connection.request(spec["method"], spec["path"], body=body, headers=spec["headers"])
response = connection.getresponse()
print(json.dumps({"status": response.status, "headers": dict(response.getheaders()),
                  "body": response.read().decode("utf-8", "replace")}))
"""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class RemotePeer:
    namespace: str
    host_address: str
    peer_address: str

    def request(
        self,
        method: str,
        port: int,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 20.0,
    ) -> Answer:
        """Send one request from inside the namespace to ``host_address:port``."""
        sent_headers = dict(headers or {})
        body = None
        if json_body is not None:
            body = json.dumps(json_body)
            sent_headers.setdefault("Content-Type", "application/json")
        spec = {
            "host": self.host_address,
            "port": port,
            "method": method,
            "path": path,
            "body": body,
            "headers": sent_headers,
            "timeout": timeout_s,
        }
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", _CLIENT, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s + 10,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        return Answer(answer["status"], answer["headers"], answer["body"])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def remote_peer() -> Iterator[RemotePeer]:
    """A namespace and veth pair for the duration of the block (the test is skipped without root/iproute2)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace needs root and iproute2")
    pid, n = os.getpid(), next(_COUNTER)
    namespace, ours, theirs = f"avt{pid}n{n}", f"av{pid % 100000}a{n}", f"av{pid % 100000}b{n}"
    subnet, slot = 100 + pid % 150, (pid // 150 + n) % 64
    host_address, peer_address = f"169.254.{subnet}.{4 * slot + 1}", f"169.254.{subnet}.{4 * slot + 2}"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace: {exc.stderr.strip()}")
    try:
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
        _ip("link", "set", theirs, "netns", namespace)
        _ip("addr", "add", f"{host_address}/30", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{peer_address}/30", "dev", theirs)
        _ip("netns", "exec", namespace, "ip", "link", "set", theirs, "up")
        _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield RemotePeer(namespace, host_address, peer_address)
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
