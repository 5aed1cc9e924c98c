#!/usr/bin/env python3
"""A Codex-CLI-shaped client WebSocket session, Python stdlib only.

    ws_session.py HOST:PORT SESSION_ID [TURNS]

Connects to /v1/responses with a session_id, sends a generate:false
prewarm, then TURNS turns that continue the last response with only the
new item, then a message that is not JSON; prints one line per response
(its id and cached/input tokens) and exits 0 if every turn completed.
Used by bench/valgrind-run to put a client WebSocket through the daemon.
"""
import base64
import json
import os
import socket
import struct
import sys


def send_frame(sock, text, opcode=1):
    data = text.encode()
    head = bytes([0x80 | opcode])
    n = len(data)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def read_exact(f, n):
    data = f.read(n)
    if len(data) < n:
        raise EOFError("connection closed")
    return data


def recv_message(f, sock):
    while True:
        b0, b1 = read_exact(f, 2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", read_exact(f, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", read_exact(f, 8))[0]
        payload = read_exact(f, n)
        opcode = b0 & 0x0F
        if opcode == 9:  # ping: answer it
            send_frame(sock, payload.decode("latin-1"), opcode=10)
            continue
        if opcode == 8:
            raise EOFError("closed %d" % struct.unpack("!H", payload[:2])[0] if n >= 2 else 0)
        if opcode == 1:
            return json.loads(payload)


def turn(f, sock, req):
    send_frame(sock, json.dumps(req))
    while True:
        ev = recv_message(f, sock)
        if ev.get("type") in ("response.completed", "response.failed", "error"):
            return ev


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    session = sys.argv[2]
    turns = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    sock = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET /v1/responses HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\nsession_id: %s\r\n\r\n"
                  % (host, key, session)).encode())
    f = sock.makefile("rb")
    status = f.readline()
    if b" 101 " not in status:
        print("upgrade refused:", status.decode().strip())
        return 1
    while f.readline() not in (b"\r\n", b""):
        pass
    instructions = "You are a terse assistant. " * 200
    req = {"type": "response.create", "model": "gpt-5.4", "instructions": instructions,
           "input": [], "generate": False}
    ok = True
    prev = None
    for i in range(turns + 1):
        if i > 0:
            req = {"type": "response.create", "model": "gpt-5.4", "instructions": instructions,
                   "previous_response_id": prev,
                   "input": [{"type": "message", "role": "user",
                              "content": [{"type": "input_text", "text": "turn %d" % i}]}]}
        ev = turn(f, sock, req)
        if ev.get("type") != "response.completed":
            print("turn %d: %s" % (i, json.dumps(ev)[:200]))
            ok = False
            break
        prev = ev["response"]["id"]
        usage = ev["response"].get("usage") or {}
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
        print("%s %s cached %d of %d" % ("prewarm" if i == 0 else "turn %d" % i, prev,
                                         cached, usage.get("input_tokens", 0)))
    send_frame(sock, "not json")
    ev = recv_message(f, sock)
    print("bad message:", ev.get("type"), ev.get("status"), (ev.get("error") or {}).get("code"))
    send_frame(sock, "\x03\xe8", opcode=8)
    sock.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
