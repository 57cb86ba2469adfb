"""The PostgreSQL engine's connections."""
import os
import socket

from sqlalchemy import text

from gateway.extensions import make_engine


def test_postgresql_connections_detect_a_dead_peer(pg_url):
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        params = dbapi.info.dsn_parameters
        sock = socket.socket(fileno=os.dup(dbapi.fileno()))
        try:
            user_timeout = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18))
            keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        finally:
            sock.close()
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "30000"
    assert keepalive == 1 and user_timeout == 30000      # on the socket itself (Linux)

