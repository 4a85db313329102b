"""The URL knobs (issue 11) as a real client sees them: Python websockets'
sync client, and its sans-IO ClientProtocol over a plain socket where the
frames themselves matter (fragment boundaries, pings, a reset).

    python knobs.py HOST:PORT PLAIN_PID GREETING_HOST:PORT

PLAIN_PID is the first server's pid (its RSS is checked while a push waits
for a reader that does not read); the second server runs with
--greeting 'welcome #{id}'.
"""
import socket
import sys
import time

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

addr, pid, greeting_addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def ws(query, path="/", **kw):
    return connect(f"ws://{addr}{path}{query}", compression=None, max_size=None, **kw)


class Raw:
    """websockets' sans-IO client on a blocking socket: every frame as it
    came off the wire (pings included; they are answered by the protocol)."""

    def __init__(self, target, at=None, timeout=10):
        uri = parse_uri(f"ws://{at or addr}{target}")
        self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        self.proto = ClientProtocol(uri, max_size=None)
        self.proto.send_request(self.proto.connect())
        self.frames = []
        self.flush()
        while self.proto.state == State.CONNECTING:
            self.feed()
        assert self.proto.state == State.OPEN, self.proto.handshake_exc

    def flush(self):
        for data in self.proto.data_to_send():
            if data:
                self.sock.sendall(data)

    def feed(self):
        data = self.sock.recv(65536)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        self.frames += [e for e in self.proto.events_received() if isinstance(e, Frame)]
        self.flush()
        return data

    def send_text(self, s):
        self.proto.send_text(s.encode())
        self.flush()

    def frame(self):
        while not self.frames:
            if not self.feed():
                raise EOFError("connection ended")
        return self.frames.pop(0)


def closed(c):
    """Reads until the connection ends; returns (code, reason) as received
    (None: no close frame, the client reports 1006)."""
    try:
        while True:
            c.recv(timeout=10)
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd else None


def check(name, cond, detail=""):
    if not cond:
        sys.exit(f"FAIL {name}: {detail}")
    print(f"ok   {name}")


# fragment: the boundaries on the wire, on echo and on a broadcast path.
r = Raw("/?fragment=10")
r.send_text("x" * 35)
got = [r.frame() for _ in range(4)]
check(
    "fragment=10 splits a 35-byte echo 10/10/10/5",
    [(f.opcode, f.fin, len(f.data)) for f in got]
    == [(Opcode.TEXT, False, 10), (Opcode.CONT, False, 10), (Opcode.CONT, False, 10), (Opcode.CONT, True, 5)],
    got,
)
with ws("", path="/broadcast/frag") as whole:
    member = Raw("/broadcast/frag?fragment=4")
    time.sleep(0.1)
    whole.send("abcdefghij")
    check("a whole member gets one message", whole.recv(timeout=5) == "abcdefghij")
    got = [member.frame() for _ in range(3)]
    check(
        "fragment=4 on a broadcast path: 4/4/2",
        [(f.opcode, f.fin, f.data) for f in got]
        == [(Opcode.TEXT, False, b"abcd"), (Opcode.CONT, False, b"efgh"), (Opcode.CONT, True, b"ij")],
        got,
    )

# delay: each echo DUR after its message; order kept.
with ws("?delay=300ms") as c:
    t0 = time.monotonic()
    c.send("first")
    time.sleep(0.1)
    c.send("second")
    a = c.recv(timeout=10)
    t1 = time.monotonic() - t0
    b = c.recv(timeout=10)
    t2 = time.monotonic() - t0
    check("delay=300ms keeps order", (a, b) == ("first", "second"), (a, b))
    check("delay=300ms: first echo after 300 ms", 0.3 <= t1 < 3, t1)
    check("delay=300ms: second echo after 400 ms", 0.4 <= t2 < 3, t2)

# repeat: each message N times.
with ws("?repeat=3") as c:
    c.send("a")
    c.send(b"bb")
    got = [c.recv(timeout=5) for _ in range(6)]
    check("repeat=3", got == ["a"] * 3 + [b"bb"] * 3, got)

# ping: a ping every DUR, payload a counter (answered by the client).
r = Raw("/?ping=100ms")
pings = []
while len(pings) < 3:
    f = r.frame()
    if f.opcode == Opcode.PING:
        pings.append(f.data)
check("ping=100ms sends 1, 2, 3", pings == [b"1", b"2", b"3"], pings)
r = Raw("/broadcast/p?ping=100ms")
check("ping on a broadcast path", r.frame().opcode == Opcode.PING)

# close: code and reason, after N answered messages.
with ws("?close=4000&reason=bye%20now&after=2") as c:
    c.send("1")
    c.send("2")
    got = [c.recv(timeout=5), c.recv(timeout=5)]
    check("close after=2: both answered first", got == ["1", "2"], got)
    check("close=4000 with its reason", closed(c) == (4000, "bye now"))
with ws("?close=3001", path="/broadcast/c") as c:
    check("close=3001 right after the handshake (broadcast)", closed(c) == (3001, ""))

# drop: no close frame (1006), with FIN or with a reset.
with ws("?drop=2") as c:
    c.send("1")
    c.send("2")
    got = [c.recv(timeout=5), c.recv(timeout=5)]
    check("drop=2: both answered first", got == ["1", "2"], got)
    check("drop=2: no close frame", closed(c) is None)
    check("drop=2: the client reports 1006", c.close_code == 1006, c.close_code)
r = Raw("/?drop=1&reset=1")
r.send_text("bye")
check("drop&reset: the answer arrives", r.frame().data == b"bye")
try:
    while r.feed():
        pass
    check("drop&reset: a TCP reset", False, "EOF instead of a reset")
except ConnectionResetError:
    check("drop&reset: a TCP reset", True)
r = Raw("/?drop=1")
r.send_text("bye")
r.frame()
check("drop without reset: FIN", r.feed() == b"")

# greeting: first, before anything is echoed; --greeting with {id}.
with ws("?greeting=hello%20there") as c:
    c.send("echo me")
    got = [c.recv(timeout=5), c.recv(timeout=5)]
    check("greeting first", got == ["hello there", "echo me"], got)
with connect(f"ws://{greeting_addr}/", compression=None) as c:
    g = c.recv(timeout=5)
    check("--greeting 'welcome #{id}'", g.startswith("welcome #") and g[9:].isdigit(), g)
    c.send("x")
    check("then echo", c.recv(timeout=5) == "x")
with connect(f"ws://{greeting_addr}/?greeting=mine", compression=None) as c:
    check("the knob replaces --greeting", c.recv(timeout=5) == "mine")


def pushed(n, size):
    head = f"{n} ".encode()[:size]
    return head + bytes(ord("a") + j % 26 for j in range(len(head), size))


# push: COUNT messages of SIZE, every byte checked, then echo as usual.
with ws("?push=100&size=1000&type=binary") as c:
    got = [c.recv(timeout=10) for _ in range(100)]
    check("push=100 size=1000 binary: every message", got == [pushed(i + 1, 1000) for i in range(100)])
    c.send("after")
    check("push, then echo as usual", c.recv(timeout=5) == "after")
with ws("?push=5&size=1KiB&type=text", path="/broadcast/push") as c:
    got = [c.recv(timeout=10) for _ in range(5)]
    check("push text on a broadcast path", got == [pushed(i + 1, 1024).decode() for i in range(5)])


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


# push 256 MiB to a client that does not read: the server holds about a window.
before = rss_mib()
host, port = addr.rsplit(":", 1)
slow = socket.create_connection((host, int(port)))
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
slow.sendall(
    b"GET /?push=256&size=1MiB HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
time.sleep(1.0)
grown = rss_mib() - before
check(f"push 256 x 1 MiB to a reader that does not read: RSS grew {grown:.1f} MiB (< 32)", grown < 32, f"RSS grew {grown:.1f} MiB")
slow.close()

# Bad values: 400 with a one-line body naming the knob.
for query, knob in [("?delay=soon", "delay"), ("?repeat=0", "repeat"), ("?close=1005", "close")]:
    try:
        with ws(query):
            check(f"{query} refused", False, "upgraded")
    except InvalidStatus as e:
        body = e.response.body.decode()
        check(
            f"{query}: 400 naming {knob}",
            e.response.status_code == 400 and body.startswith(f"bad value for {knob}: ") and body.count("\n") == 1,
            body,
        )
try:
    with ws("?delay=1s", path="/broadcast/x"):
        check("delay on a broadcast path refused", False, "upgraded")
except InvalidStatus as e:
    check("delay on a broadcast path: 400", e.response.status_code == 400, e.response.body)
print("all knobs ok")
