#!/usr/bin/env python3
"""Relays TCP connections to a Unix socket, byte for byte.

A lab host (a network namespace) runs it so that a server on another lab host can
reach a test's own local service, which listens on a Unix socket: path-named Unix
sockets belong to the file system, not to a network namespace. TLS passes through
untouched, end to end.

Usage: relay.py ADDRESS SOCKET. Listens on ADDRESS, port 0; prints `listening PORT`.
"""
import socket
import sys
import threading

ADDRESS, SOCKET = sys.argv[1], sys.argv[2]


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(conn):
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(SOCKET)
    except OSError:
        conn.close()
        return
    threading.Thread(target=pump, args=(conn, up), daemon=True).start()
    threading.Thread(target=pump, args=(up, conn), daemon=True).start()


family = socket.AF_INET6 if ":" in ADDRESS else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((ADDRESS, 0))
server.listen(64)
print(f"listening {server.getsockname()[1]}", flush=True)
while True:
    c, _ = server.accept()
    relay(c)
