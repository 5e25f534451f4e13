"""Bulk TCP transfer used by the link-shaping test: `server HOST PORT` prints bit/s received; `client HOST PORT SECONDS`."""

import socket, sys, time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    n = 0
    t0 = None
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        if t0 is None:
            t0 = time.perf_counter()
        n += len(b)
    print(n * 8 / (time.perf_counter() - t0), flush=True)
else:
    secs = float(sys.argv[4])
    c = socket.create_connection((host, port))
    buf = b"x" * (1 << 16)
    end = time.perf_counter() + secs
    while time.perf_counter() < end:
        c.sendall(buf)
    c.close()
