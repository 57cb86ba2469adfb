"""A TCP proxy that can stop forwarding without closing anything: a network partition, as the client sees it.

While held, no byte moves in either direction and no connection is refused or reset: what a client sends is
accepted by the proxy's socket and never answered, new connections are accepted and never reach the server.
On resume, what was held is delivered, as TCP delivers after a partition heals. Threads of its own (under
gevent's monkey patching, greenlets): nothing here depends on the code under test yielding.
"""
import select
import socket
import threading


class BlackHoleProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = False
        self._sockets = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="blackhole-accept", daemon=True).start()

    def url(self, database_url):
        """`database_url` (postgresql://user@host:port/db) pointed at this proxy."""
        scheme, rest = database_url.split("://", 1)
        userinfo, _, hostpart = rest.rpartition("@")
        path = hostpart.split("/", 1)[1]
        return f"{scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{path}"

    def hold(self):
        """Stop forwarding: bytes and connections vanish, nothing is refused or closed."""
        self._forwarding.clear()

    def resume(self):
        self._forwarding.set()

    def close(self):
        self._closed = True
        self._forwarding.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in [self._listener, *sockets]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), name="blackhole-pump", daemon=True).start()

    def _pump(self, client):
        self._forwarding.wait()  # a connection made during a hold reaches the server only on resume
        if self._closed:
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._sockets += [client, server]
        peer = {client: server, server: client}
        try:
            while not self._closed:
                self._forwarding.wait()
                readable, _, _ = select.select([client, server], [], [], 0.1)
                for s in readable:
                    if not self._forwarding.is_set():
                        break  # held while waiting: leave the bytes in the socket
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass
