"""A TCP proxy the tests put between the product and the local S3 server, to cut the network
without losing the server's state: ``down()`` drops every connection and refuses new ones (as a
stopped server would), ``up()`` listens again on the same port. ``down_on`` cuts the network when
a client request line matches a pattern (the first upload of an embedding file, say), so an
outage lands at a chosen point of a study whatever the machine's speed; ``for_s`` brings it back
that many seconds later (a transient outage), or it stays down until ``up()``."""
from __future__ import annotations

import re
import socket
import threading
import time


class Proxy:
    def __init__(self, target_port: int, port: int = 0):
        self.target = ("127.0.0.1", target_port)
        self.port = port
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.trigger: tuple[re.Pattern, float | None] | None = None
        self.cuts = 0
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = self.conns, set()
        if listener is not None:
            self.cuts += 1
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def down_on(self, pattern: bytes, for_s: float | None = None) -> None:
        self.trigger = (re.compile(pattern), for_s)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                if self.listener is not listener:
                    client.close(), server.close()
                    return
                self.conns |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and self.trigger is not None and self.trigger[0].search(data):
                    _, for_s = self.trigger
                    self.trigger = None
                    self.down()
                    if for_s is not None:
                        threading.Timer(for_s, self.up).start()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
            with self.lock:
                self.conns -= {src, dst}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)
