"""Several nodes: the launchers agree to start before any of them starts torchrun, and say why not.

torchrun's rendezvous waits (ten minutes and more) for a node that failed before it got there, and
then reports nothing useful. So the kit's launchers meet first, on MASTER_ADDR at MASTER_PORT + 1:
each node checks what it can locally (data, work dir, devices), node 0 collects every node's
verdict and answers all of them "go" or "abort: <which node, why>". A node that cannot reach node
0, or a node 0 that misses a node, gives up after the timeout, naming whom it waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass

from ..errors import KitError

BARRIER_PORT_OFFSET = 1  # the kit's own meeting point: MASTER_PORT + 1
TIMEOUT_SECONDS = 600.0
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Nodes:
    count: int
    rank: int
    master_addr: str
    master_port: int

    @classmethod
    def from_environment(cls) -> Nodes:
        """NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT, as torchrun reads them: the one place they are parsed."""
        count = _integer("NNODES", "1", "the number of nodes (machines) of the run, the same on every node")
        rank = _integer("NODE_RANK", "0", "this node's index, 0 on the node at MASTER_ADDR")
        port = _integer("MASTER_PORT", "29500", "a free TCP port on node 0, the same on every node")
        if count < 1:
            raise KitError(f"NNODES={count}: a run has at least one node. Fix: NNODES=1, or the number of nodes")
        if not 0 <= rank < count:
            raise KitError(f"NODE_RANK={rank} with NNODES={count}: node ranks run from 0 to {count - 1}. Fix: give "
                           "each node its own NODE_RANK in that range")
        if not 1 <= port < 65535:  # the nodes meet at MASTER_PORT + 1, which must be a port too
            raise KitError(f"MASTER_PORT={port} is not a TCP port the nodes can use (1 to 65534: they also meet "
                           "at MASTER_PORT + 1). Fix: MASTER_PORT=29500, or another free port below 65535")
        address = os.environ.get("MASTER_ADDR", "").strip()
        if count > 1 and not address:
            raise KitError(f"NNODES={count} needs MASTER_ADDR: the address of node 0, the same on every node. Fix: "
                           "export MASTER_ADDR=<node 0's IP> on every node")
        return cls(count, rank, address or "127.0.0.1", port)

    @property
    def multi(self) -> bool:
        return self.count > 1

    @property
    def barrier_address(self) -> tuple[str, int]:
        return self.master_addr, self.master_port + BARRIER_PORT_OFFSET


def _integer(name: str, default: str, meaning: str) -> int:
    value = os.environ.get(name, "").strip() or default
    try:
        return int(value)
    except ValueError:
        raise KitError(f"{name}={value} is not a whole number. Fix: set {name} to {meaning}") from None


def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall((json.dumps(message) + "\n").encode())


def _receive(connection: socket.socket, deadline: float) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        connection.settimeout(max(0.1, deadline - time.time()))
        chunk = connection.recv(4096)
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        data += chunk
    return json.loads(data.decode())


def meet(nodes: Nodes, failure: str | None, timeout: float = TIMEOUT_SECONDS) -> None:
    """Every node's launcher calls this once before torchrun, with its own failure (None: ready).

    Returns when all nodes are ready; raises KitError naming the node that failed (this one or another), or
    the node that never came.
    """
    if not nodes.multi:
        if failure:
            raise KitError(failure)
        return
    deadline = time.time() + timeout
    if nodes.rank == 0:
        _meet_as_node_0(nodes, failure, deadline)
    else:
        _meet_as_node_k(nodes, failure, deadline)


def _meet_as_node_0(nodes: Nodes, failure: str | None, deadline: float) -> None:
    verdicts: dict[int, str | None] = {0: failure}
    connections = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("", nodes.barrier_address[1]))
        except OSError as exc:
            raise KitError(f"node 0 cannot listen on port {nodes.barrier_address[1]} (MASTER_PORT + "
                           f"{BARRIER_PORT_OFFSET}) for the other nodes: {exc}") from None
        server.listen(nodes.count)
        try:
            while len(verdicts) < nodes.count:
                server.settimeout(max(0.1, deadline - time.time()))
                try:
                    connection, _ = server.accept()
                except socket.timeout:
                    waiting = sorted(set(range(nodes.count)) - set(verdicts))
                    raise KitError(f"node(s) {', '.join(map(str, waiting))} did not report within the timeout: "
                                   "are they started, with the same NNODES, MASTER_ADDR and MASTER_PORT?") from None
                try:
                    message = _receive(connection, deadline)
                    verdicts[int(message["node"])] = message.get("failure")
                    connections.append(connection)
                except (OSError, ValueError, KeyError, ConnectionError):
                    connection.close()
            failed = {rank: why for rank, why in verdicts.items() if why}
            answer = ("; ".join(f"node {rank}: {why}" for rank, why in sorted(failed.items())) if failed else None)
            for connection in connections:
                with contextlib.suppress(OSError):
                    _send(connection, {"go": answer is None, "failure": answer})
        finally:
            for connection in connections:
                connection.close()
    if answer:
        raise KitError(f"the run is not started: {answer}")


def _meet_as_node_k(nodes: Nodes, failure: str | None, deadline: float) -> None:
    address = nodes.barrier_address
    while True:
        try:
            with socket.create_connection(address, timeout=max(0.1, min(5.0, deadline - time.time()))) as connection:
                _send(connection, {"node": nodes.rank, "failure": failure})
                reply = _receive(connection, deadline)
            break
        except (OSError, ConnectionError, ValueError) as exc:
            if time.time() >= deadline:
                raise KitError(f"node {nodes.rank} could not meet node 0 at {address[0]}:{address[1]} (MASTER_ADDR, "
                               f"MASTER_PORT + {BARRIER_PORT_OFFSET}) within the timeout: {exc}") from None
            time.sleep(RETRY_SECONDS)
    if failure:
        raise KitError(failure)
    if not reply.get("go"):
        raise KitError(f"the run is not started: {reply.get('failure')}")
