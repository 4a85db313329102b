"""Headless Chromium through chromedriver, standard library only (WebDriver
is HTTP): the one setup tests/browser.py, tests/docs.py and
tests/clients/rooms_browser.py share. Needs `chromium` and `chromedriver`
(tests/clients/chromium.sh installs them)."""
import json, shutil, socket, subprocess, tempfile, time, urllib.request

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chromium:
    """A chromedriver on a free port and one browser session. `wd` is the raw
    WebDriver call; `s` the session's path prefix; `close` ends both."""

    def __init__(self, extra_args=(), ready_within=60, capabilities=None):
        self.port = free_port()
        self.driver = subprocess.Popen(["chromedriver", f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        self.profile = tempfile.mkdtemp(prefix="echocast-chromium-")
        self.session = None
        try:
            deadline = time.monotonic() + ready_within
            while not self._ready():
                if time.monotonic() > deadline:
                    raise SystemExit("chromedriver did not start")
                time.sleep(0.1)
            caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ARGS + [f"--user-data-dir={self.profile}", *extra_args]},
                **(capabilities or {})}}}
            self.session = self.wd("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.close()
            raise
        self.s = f"/session/{self.session}"

    def _ready(self):
        try:
            return self.wd("GET", "/status").get("ready")
        except OSError:
            return False

    def wd(self, method, path, body=None, timeout=60):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     data=None if body is None else json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)["value"]

    def js(self, script, *args):
        """Runs a script in the page; returns what it returns."""
        return self.wd("POST", f"{self.s}/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        """Runs a script that calls its last argument when done."""
        return self.wd("POST", f"{self.s}/execute/async", {"script": script, "args": list(args)})

    def close(self):
        if self.session:
            try:
                self.wd("DELETE", f"/session/{self.session}")
            except OSError:
                pass
            self.session = None
        self.driver.kill()
        self.driver.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
