#!/usr/bin/env python3
"""Writes the TCP frame fuzz seed corpus (tests/transports/corpus/tcp_frame/) from the layout in
docs/tcp-transport.md. Deterministic. Each file: one byte (piece size for the fuzz target), then
one or more frames. Usage: tests/transports/make_tcp_frame_corpus.py tests/transports/corpus/tcp_frame"""
import struct
import sys
from pathlib import Path

MAGIC = 0x4350524D


def frame(kind, call_id=0, flags=0, status=0, timeout=0, attempt=0, method=0, encoding=0,
          priority=0, host=b"", app=b"", service=b"", text=b"", metadata=b"", payload=b""):
    body = host + app + service + text + metadata + payload
    header = struct.pack("<IBBHIIQQHHBBHHHHHII", MAGIC, 1, kind, flags, 56 + len(body), status,
                         call_id, timeout, attempt, method, encoding, priority, 0, len(host),
                         len(app), len(service), len(text), len(metadata), len(payload))
    assert len(header) == 56
    return header + body


def metadata_block(pairs):
    # Bytes standing for a metadata block (the frame parser does not look inside it).
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v)) + k + v
    return out


seeds = {
    "hello": frame(1, host=b"host-a"),
    "request_echo": frame(2, call_id=1, timeout=10**9, encoding=1, host=b"host-a",
                          app=b"echo_client", service=b"echo.EchoService",
                          payload=b"\x0a\x05hello"),
    "request_metadata": frame(2, call_id=2, flags=1, attempt=1, method=0, encoding=1,
                              priority=3, host=b"a", app=b"c", service=b"echo.EchoService",
                              metadata=metadata_block([(b"trace", b"abc"), (b"user", b"u1")]),
                              payload=b"\x0a\x00"),
    "request_native": frame(2, call_id=3, encoding=2, host=b"h", app=b"a", service=b"s.S",
                            payload=bytes(range(64))),
    "reply_ok": frame(3, call_id=1, encoding=1, payload=b"\x0a\x05hello"),
    "reply_error": frame(3, call_id=4, status=14, text=b"no app serves echo.EchoService"),
    "cancel": frame(4, call_id=5),
    "ping_pong": frame(5, call_id=6) + frame(6, call_id=6),
    "stream": frame(1, host=b"host-b") + b"".join(
        frame(2, call_id=i, encoding=1, host=b"host-b", app=b"x", service=b"echo.EchoService",
              payload=b"\x0a\x01" + bytes([i])) for i in range(8)) + frame(3, call_id=3, encoding=1),
    "reply_big": frame(3, call_id=7, encoding=1, payload=b"\x0a\xe8\x07" + b"z" * 1000),
    # The schema handshake: an offer and its answer, a fingerprint in the call id.
    "schema_handshake": frame(7, call_id=0x1234567890ABCDEF, service=b"compat.Store")
    + frame(8, call_id=0x0FEDCBA987654321, service=b"compat.Store"),
}

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for i, (name, data) in enumerate(sorted(seeds.items())):
    # The first byte picks how the stream is cut into reads: vary it over the seeds.
    (out / name).write_bytes(bytes([(7 * i + 1) % 256]) + data)
