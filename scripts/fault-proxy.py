#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of an S3 server (the tests' moto) or Azurite, for the
test suite.

Plain Python asyncio, no packages beyond the standard library (moto already needs Python).
Usage: scripts/fault-proxy.py LISTEN_PORT UPSTREAM_URL   — prints "http://127.0.0.1:PORT" once
listening (LISTEN_PORT 0 picks a free port).

Requests pass through unchanged (path-style: /BUCKET/KEY; Azurite's /devstoreaccount1/CONTAINER/BLOB
counts its container as the bucket) unless the bucket has faults set.
Faults are configured per bucket through a control endpoint, so that tests running in
parallel each fault only their own bucket:

  PUT /__faults/BUCKET   body: JSON {"seed": 1, "rules": [RULE, ...]}   (replaces; {} clears)
  GET /__faults/BUCKET   → JSON {"requests": N, "injected": {"ACTION": count, ...}}

RULE: {"action": ..., "rate": 0.1 | "nth": [3, 7] (1-based among the requests it matches) |
       neither (every match), "method": "GET", "path": "regex on path?query",
       "times": max injections, ...action arguments}
Actions:
  "status"          answer `status` (500, 503) without forwarding; 503 carries S3's SlowDown
  "reset"           forward, send the headers and half the body, then reset the connection
  "truncate"        forward, send the headers (full Content-Length) and half the body, close
  "delay"           forward after `seconds`
  "strip_response"  forward, drop the response headers named in `headers`
  "strip_request"   drop the request headers named in `headers`, then forward
Rate decisions are a hash of the seed, the method, the path and how often that request was
seen, so a run injects the same faults into the same requests whatever the interleaving.
"""

import asyncio
import hashlib
import json
import re
import socket
import struct
import sys
import urllib.parse

AZURITE_ACCOUNT = "devstoreaccount1"  # the emulator's account, the first segment of its paths
FAULTS = {}  # bucket -> {"seed", "rules", "seen": {key: n}, "matched": [n per rule], ...}


def decide(state, method, target):
    """The rules that apply to this request (each rule at most once)."""
    key = f"{method} {target}"
    occurrence = state["seen"].get(key, 0)
    state["seen"][key] = occurrence + 1
    state["requests"] += 1
    chosen = []
    for i, rule in enumerate(state["rules"]):
        if "method" in rule and rule["method"] != method:
            continue
        if "path" in rule and not re.search(rule["path"], target):
            continue
        state["matched"][i] += 1
        if "times" in rule and state["fired"][i] >= rule["times"]:
            continue
        if "nth" in rule:
            hit = state["matched"][i] in rule["nth"]
        elif "rate" in rule:
            digest = hashlib.sha256(f"{state['seed']}|{i}|{key}|{occurrence}".encode()).digest()
            hit = struct.unpack(">Q", digest[:8])[0] / 2**64 < rule["rate"]
        else:
            hit = True
        if hit:
            state["fired"][i] += 1
            counts = state["injected"]
            counts[rule["action"]] = counts.get(rule["action"], 0) + 1
            chosen.append(rule)
    return chosen


async def read_head(reader):
    """Request or status line and headers (a list of (name, value)), or None at EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers, name):
    return next((v for k, v in headers if k.lower() == name), None)


async def read_body(reader, headers, bodiless=False):
    if bodiless:
        return b""
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                # trailers (if any) end with an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    return await reader.read()


def head_bytes(first, headers):
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


def without(headers, names):
    names = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in names]


async def forward(upstream, method, target, headers, body):
    host, port = upstream
    reader, writer = await asyncio.open_connection(host, port)
    try:
        headers = without(headers, ["connection", "transfer-encoding", "content-length"])
        headers += [("Connection", "close"), ("Content-Length", str(len(body)))]
        writer.write(head_bytes(f"{method} {target} HTTP/1.1", headers) + body)
        await writer.drain()
        status, rheaders = await read_head(reader)
        data = await read_body(reader, rheaders, method == "HEAD" or status.split()[1] in ("204", "304"))
        return status, rheaders, data
    finally:
        writer.close()


def control(method, bucket, body):
    if method == "PUT":
        config = json.loads(body or b"{}")
        rules = config.get("rules", [])
        FAULTS[bucket] = {
            "seed": config.get("seed", 0),
            "rules": rules,
            "seen": {},
            "matched": [0] * len(rules),
            "fired": [0] * len(rules),
            "injected": {},
            "requests": 0,
        }
        return b"{}"
    state = FAULTS.get(bucket, {"requests": 0, "injected": {}})
    return json.dumps({"requests": state["requests"], "injected": state["injected"]}).encode()


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def serve(reader, writer, upstream):
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            first, headers = head
            method, target, _ = first.split(" ", 2)
            # a request without a length has no body (requests are never delimited by the end)
            body = await read_body(reader, headers, header(headers, "content-length") is None and header(headers, "transfer-encoding") is None)
            path = urllib.parse.urlsplit(target).path
            if path.startswith("/__faults/"):
                answer = control(method, path[len("/__faults/"):], body)
                writer.write(head_bytes("HTTP/1.1 200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]) + answer)
                await writer.drain()
                continue
            segments = path.lstrip("/").split("/")
            bucket = segments[1] if segments[0] == AZURITE_ACCOUNT and len(segments) > 1 else segments[0]
            state = FAULTS.get(bucket)
            rules = decide(state, method, target) if state else []
            actions = {r["action"]: r for r in rules}
            if "strip_request" in actions:
                headers = without(headers, actions["strip_request"]["headers"])
            if "status" in actions:
                code = actions["status"].get("status", 503)
                text = {500: "InternalError", 503: "SlowDown"}.get(code, "InternalError")
                answer = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{text}</Code><Message>injected by the fault proxy</Message></Error>'.encode()
                reason = {500: "Internal Server Error", 503: "Slow Down"}.get(code, "Error")
                writer.write(head_bytes(f"HTTP/1.1 {code} {reason}", [("Content-Type", "application/xml"), ("Content-Length", str(len(answer)))]) + answer)
                await writer.drain()
                continue
            if "delay" in actions:
                await asyncio.sleep(actions["delay"].get("seconds", 1.0))
            status, rheaders, data = await forward(upstream, method, target, headers, body)
            if "strip_response" in actions:
                rheaders = without(rheaders, actions["strip_response"]["headers"])
            # HEAD answers carry the object's length but no body
            length = header(rheaders, "content-length") if method == "HEAD" else str(len(data))
            rheaders = without(rheaders, ["connection", "transfer-encoding", "content-length"])
            rheaders.append(("Content-Length", length or "0"))
            cut = ("reset" in actions or "truncate" in actions) and len(data) > 1
            if cut:
                writer.write(head_bytes(status, rheaders) + data[: len(data) // 2])
                await writer.drain()
                if "reset" in actions:
                    reset(writer)
                else:
                    writer.close()
                return
            writer.write(head_bytes(status, rheaders) + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if not writer.is_closing():
            writer.close()


async def main():
    port = int(sys.argv[1])
    url = urllib.parse.urlsplit(sys.argv[2])
    upstream = (url.hostname, url.port or 80)
    server = await asyncio.start_server(lambda r, w: serve(r, w, upstream), "127.0.0.1", port, limit=1 << 20)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
