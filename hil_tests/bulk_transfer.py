"""Bulk TCP transfer for the link-shaping test.

`server HOST PORT` prints "ready", then the received goodput in bit/s; `client HOST PORT SECONDS`
sends as fast as it can for SECONDS.
"""

import socket
import sys
import time


def server(host: str, port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1)
    print("ready", flush=True)
    conn, _ = sock.accept()
    received, start = 0, None
    while chunk := conn.recv(1 << 16):
        if start is None:
            start = time.perf_counter()
        received += len(chunk)
    print(received * 8 / (time.perf_counter() - start), flush=True)


def client(host: str, port: int, seconds: float) -> None:
    conn = socket.create_connection((host, port))
    buf = b"x" * (1 << 16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        conn.sendall(buf)
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
