"""WebSockets over HTTP/2 (RFC 8441) with Python's sans-IO h2 as the client,
over h2c (prior knowledge) and TLS with ALPN: the server's SETTINGS, echo on
extended CONNECT streams, several WebSockets and GETs on one connection, a
room shared with an HTTP/1.1 member, a 16 MiB message through flow control,
a stream never read while another echoes, the client's RST_STREAM, knobs on
a stream (drop=N resets the stream, reset=1 with INTERNAL_ERROR, a bad knob
is a 400), every --http2 mode, and GOAWAY after 1001 on shutdown.
Usage: http2.py ECHOCAST_BINARY"""
import json, os, signal, socket, ssl, struct, subprocess, sys, tempfile, time

import h2.config, h2.connection, h2.events, h2.errors, h2.settings
from websockets.sync.client import connect as ws_connect

BINARY = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="echocast-h2-")
ENABLE_CONNECT = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


def start(*args):
    proc = subprocess.Popen([BINARY, "--listen", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=open(os.path.join(TMP, "log"), "ab"), text=True)
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc, int(line.strip().rsplit(":", 1)[1])


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


class Client:
    """One HTTP/2 connection; `pump` reads and dispatches events."""

    def __init__(self, port, cafile=None, window=1 << 24):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        if cafile:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.scheme = "https" if cafile else "http"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window > 65535:
            self.conn.increment_flow_control_window(window - 65535)
        self.flush()
        self.remote_settings = {}
        self.streams = {}  # id -> dict(headers, data, ended, reset, unread)
        self.terminated = None
        self.until(lambda: ENABLE_CONNECT in self.remote_settings or
                   h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in self.remote_settings)

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not data:
            self.terminated = self.terminated or "eof"
            return False
        for ev in self.conn.receive_data(data):
            s = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.remote_settings[k] = v.new_value
            elif isinstance(ev, h2.events.ResponseReceived):
                s["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                s["data"] += ev.data
                if not s["unread"]:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    s["held"] += ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamEnded):
                s["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                if s is not None:
                    s["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
        self.flush()
        return True

    def until(self, cond, timeout=10, what="condition"):
        end = time.time() + timeout
        while not cond():
            if time.time() > end:
                raise AssertionError(f"timed out waiting for {what}")
            if not self.pump(max(0.05, end - time.time())) and self.terminated and not cond():
                raise AssertionError(f"connection ended waiting for {what}: {self.terminated}")

    def open(self, headers, end_stream=False, unread=False):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"headers": None, "data": b"", "ended": False, "reset": None,
                             "unread": unread, "held": 0, "parsed": 0}
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def get(self, path, method="GET", body=None, headers=()):
        h = [(":method", method), (":scheme", self.scheme), (":path", path), (":authority", "localhost")] + list(headers)
        sid = self.open(h, end_stream=body is None)
        if body is not None:
            self.send(sid, body, end_stream=True)
        self.until(lambda: self.streams[sid]["ended"] or self.streams[sid]["reset"] is not None, what=f"{path}")
        return self.streams[sid]

    def websocket(self, path, extra=(), unread=False, wait=True):
        h = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", self.scheme), (":path", path),
             (":authority", "localhost"), ("sec-websocket-version", "13")] + list(extra)
        sid = self.open(h, unread=unread)
        if wait:
            self.until(lambda: self.streams[sid]["headers"] is not None or self.streams[sid]["reset"] is not None,
                       what=f"the answer to CONNECT {path}")
        return sid

    def send(self, sid, data, end_stream=False):
        view = memoryview(data)
        while True:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0 and len(view):
                self.until(lambda: self.conn.local_flow_control_window(sid) > 0, what="window to send")
                continue
            n = min(room, len(view))
            last = n == len(view)
            self.conn.send_data(sid, view[:n].tobytes(), end_stream=end_stream and last)
            self.flush()
            view = view[n:]
            if last:
                return

    def ws_send(self, sid, payload, opcode=None, fin=True):
        if opcode is None:
            opcode = 1 if isinstance(payload, str) else 2
        if isinstance(payload, str):
            payload = payload.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, mask)
        self.send(sid, head + mask + masked)

    def ws_frame(self, sid, timeout=10):
        """The next whole frame of the stream: (fin, opcode, payload)."""
        s = self.streams[sid]
        while True:
            frame = _parse(s["data"], s["parsed"])
            if frame:
                fin, opcode, payload, end = frame
                s["parsed"] = end
                if end > 1 << 20:
                    s["data"] = s["data"][end:]
                    s["parsed"] = 0
                return fin, opcode, payload
            if s["reset"] is not None:
                raise ConnectionError(f"stream reset with {s['reset']!r}")
            self.until(lambda: len(s["data"]) > s["parsed"] and _parse(s["data"], s["parsed"]) or
                       s["reset"] is not None or s["ended"], timeout=timeout, what="a frame")
            if s["ended"] and not _parse(s["data"], s["parsed"]):
                raise ConnectionError("stream ended")

    def ws_recv(self, sid, timeout=10):
        """The next whole message (fragments joined): (opcode, payload)."""
        fin, opcode, payload = self.ws_frame(sid, timeout)
        parts = [payload]
        while not fin:
            fin, _, more = self.ws_frame(sid, timeout)
            parts.append(more)
        return opcode, b"".join(parts)


def _mask(payload, mask):
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")


def _parse(buf, at):
    if len(buf) - at < 2:
        return None
    b0, b1 = buf[at], buf[at + 1]
    n = b1 & 0x7F
    i = at + 2
    if n == 126:
        if len(buf) < i + 2:
            return None
        n = struct.unpack("!H", buf[i:i + 2])[0]
        i += 2
    elif n == 127:
        if len(buf) < i + 8:
            return None
        n = struct.unpack("!Q", buf[i:i + 8])[0]
        i += 8
    assert not b1 & 0x80, "the server masked a frame"
    if len(buf) < i + n:
        return None
    return bool(b0 & 0x80), b0 & 0x0F, bytes(buf[i:i + n]), i + n


def close_payload(payload):
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def check(name, fn):
    t = time.time()
    try:
        fn()
    except BaseException:
        print(f"FAIL {name}; the server's log ends:", file=sys.stderr)
        with open(os.path.join(TMP, "log"), errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-30:]))
        raise
    print(f"ok  {name} ({time.time() - t:.2f} s)", flush=True)


def echo_on(c, path="/"):
    sid = c.websocket(path)
    assert c.streams[sid]["headers"][":status"] == "200", c.streams[sid]["headers"]
    c.ws_send(sid, "héllo")
    assert c.ws_recv(sid) == (1, "héllo".encode())
    c.ws_send(sid, bytes(range(256)))
    assert c.ws_recv(sid) == (2, bytes(range(256)))
    return sid


def main():
    proc, port = start("--inspect", "on")
    try:
        def settings():
            c = Client(port)
            assert c.remote_settings.get(ENABLE_CONNECT) == 1, c.remote_settings
            assert c.remote_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) == 1000
        check("h2c: SETTINGS_ENABLE_CONNECT_PROTOCOL = 1", settings)

        def echo_and_close():
            c = Client(port)
            sid = echo_on(c, "/echo?x=1")
            c.ws_send(sid, struct.pack("!H", 1000) + b"bye", opcode=8)
            op, payload = c.ws_recv(sid)
            assert op == 8 and close_payload(payload)[0] == 1000, payload
            c.conn.end_stream(sid)
            c.flush()
            c.until(lambda: c.streams[sid]["ended"], what="END_STREAM after the close")
        check("h2c: echo on an extended CONNECT, close then END_STREAM", echo_and_close)

        def many():
            c = Client(port)
            sids = [c.websocket(f"/s{i}") for i in range(5)]
            page = c.get("/")
            assert page["headers"][":status"] == "200" and b"<html" in page["data"].lower()
            for i, sid in enumerate(sids):
                c.ws_send(sid, f"stream {i}")
            health = c.get("/healthz")
            assert health["headers"][":status"] == "200", health
            for i, sid in enumerate(sids):
                assert c.ws_recv(sid) == (1, f"stream {i}".encode())
            stats = json.loads(c.get("/stats")["data"])
            assert stats["connections"]["echo"] >= 5, stats
            conns = json.loads(c.get("/connections")["data"])
            ws = [x for x in conns if (x.get("path") or "").startswith("/s")]
            assert len(ws) == 5, conns
            assert all(x["transport"] == "h2c" and x["stream"] % 2 == 1 for x in ws), ws
            assert len({x["connection"] for x in ws}) == 1, ws
        check("five WebSockets, the page, /healthz, /stats and /connections on one connection", many)

        def room():
            c = Client(port)
            sid = c.websocket("/broadcast/h2room")
            with ws_connect(f"ws://127.0.0.1:{port}/broadcast/h2room") as w:
                time.sleep(0.1)
                w.send("from http/1.1")
                assert c.ws_recv(sid) == (1, b"from http/1.1")
                assert w.recv() == "from http/1.1"
                c.ws_send(sid, "from h2")
                assert w.recv() == "from h2"
                assert c.ws_recv(sid) == (1, b"from h2")
            post = c.get("/broadcast/h2room", method="POST", body=b"posted over h2",
                         headers=[("content-type", "text/plain")])
            assert post["headers"][":status"] in ("200", "202"), post
            got = c.ws_recv(sid)
            assert got == (1, b"posted over h2"), got
        check("a room with an HTTP/1.1 member and a POST over HTTP/2", room)

        def big():
            c = Client(port)
            sid = c.websocket("/big")
            payload = os.urandom(16 << 20)
            t = time.time()
            c.ws_send(sid, payload)
            op, back = c.ws_recv(sid, timeout=60)
            assert op == 2 and back == payload
            print(f"    16 MiB echoed in {time.time() - t:.2f} s")
        check("a 16 MiB message through flow control", big)

        def unread():
            c = Client(port)
            stuck = c.websocket("/stuck", unread=True)
            c.ws_send(stuck, os.urandom(200_000))  # its echo exceeds the stream window
            other = echo_on(c, "/other")
            for i in range(50):
                c.ws_send(other, f"m{i}")
                assert c.ws_recv(other) == (1, f"m{i}".encode())
            s = c.streams[stuck]
            assert len(s["data"]) <= 65535 + 16, len(s["data"])
            # Reading it now lets the rest through.
            c.conn.acknowledge_received_data(s["held"], stuck)
            s["unread"] = False
            c.flush()
            op, back = c.ws_recv(stuck, timeout=20)
            assert op == 2 and len(back) == 200_000
        check("a stream never read is held by its window; another echoes meanwhile", unread)

        def client_reset():
            c = Client(port)
            sid = echo_on(c, "/reset-me")
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            c.flush()
            echo_on(c, "/after")
        check("the client's RST_STREAM ends one stream, the connection goes on", client_reset)

        def knobs():
            c = Client(port)
            sid = c.websocket("/k?drop=1")
            c.ws_send(sid, "one")
            c.until(lambda: c.streams[sid]["reset"] is not None, what="RST_STREAM")
            assert c.streams[sid]["reset"] == h2.errors.ErrorCodes.CANCEL, c.streams[sid]
            sid = c.websocket("/k?drop=1&reset=1")
            c.ws_send(sid, "one")
            c.until(lambda: c.streams[sid]["reset"] is not None, what="RST_STREAM")
            assert c.streams[sid]["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
            sid = c.websocket("/k?delay=banana")
            c.until(lambda: c.streams[sid]["ended"], what="the 400's end")
            assert c.streams[sid]["headers"][":status"] == "400", c.streams[sid]
            echo_on(c, "/still-fine")
        check("knobs on a stream: drop=1 (CANCEL), reset=1 (INTERNAL_ERROR), a bad knob (400)", knobs)
    finally:
        stop(proc)

    proc, port = start("--http2", "refuse-websockets")
    try:
        def refused():
            c = Client(port)
            assert c.remote_settings.get(ENABLE_CONNECT) == 1
            sid = c.websocket("/x")
            c.until(lambda: c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None, what="501")
            assert c.streams[sid]["headers"][":status"] == "501", c.streams[sid]
            assert c.get("/healthz")["headers"][":status"] == "200"
        check("--http2 refuse-websockets: the setting, then 501", refused)
    finally:
        stop(proc)

    proc, port = start("--http2", "no-websockets")
    try:
        def not_offered():
            c = Client(port)
            assert ENABLE_CONNECT not in c.remote_settings, c.remote_settings
            assert c.get("/healthz")["headers"][":status"] == "200"
        check("--http2 no-websockets: no setting, GETs still served", not_offered)
    finally:
        stop(proc)

    proc, port = start("--http2", "off")
    try:
        def off():
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(h2.connection.H2Connection().data_to_send() or b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            s.settimeout(5)
            got = s.recv(100)
            assert got.startswith(b"HTTP/1.1 4"), got
        check("--http2 off: the preface is an HTTP/1.1 error", off)
    finally:
        stop(proc)

    cert = os.path.join(TMP, "cert.pem")
    proc, port = start("--tls-self-signed", "--tls-cert-out", cert)
    try:
        def tls():
            c = Client(port, cafile=cert)
            echo_on(c, "/over-tls")
            assert c.get("/healthz")["headers"][":status"] == "200"
        check("TLS with ALPN h2: echo and a GET", tls)

        def goaway():
            c = Client(port, cafile=cert)
            sid = echo_on(c, "/until-shutdown")
            proc.send_signal(signal.SIGTERM)
            op, payload = c.ws_recv(sid)
            assert op == 8 and close_payload(payload)[0] == 1001, payload
            c.ws_send(sid, struct.pack("!H", 1001), opcode=8)
            c.conn.end_stream(sid)
            c.flush()
            c.until(lambda: isinstance(c.terminated, h2.events.ConnectionTerminated), what="GOAWAY")
            assert c.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        check("shutdown: 1001 on the WebSocket stream, then GOAWAY", goaway)
    finally:
        try:
            stop(proc)
        except Exception:
            pass


if __name__ == "__main__":
    main()
