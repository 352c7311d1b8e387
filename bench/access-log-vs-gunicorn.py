"""Sends the same requests to gunicorn and to rwsgi, each with an access log
in the same format (every atom), and compares the lines byte for byte, the
clock, durations, pids and the servers' own ports masked.

    /tmp/venv/bin/python bench/access-log-vs-gunicorn.py   # a Python with gunicorn 27

Exit 0 when the lines are identical; else the differing lines are printed.
test/access-log.test.mjs runs it when a Python with gunicorn is found.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = [
    "%(h)s", "%(l)s", "%(u)s", '"%(r)s"', "%(s)s", "%(m)s", "%(U)s", "[%(q)s]", "%(H)s",
    "%(b)s", "%(B)s", '"%(f)s"', '"%(a)s"', "%({x-custom}i)s", "%({X-Out}o)s",
    "%({content-type}o)s", "%({missing}i)s", "%({http_x_custom}e)s", "%({remote_addr}e)s",
    "%({request_method}e)s", "%({query_string}e)s", "%({raw_uri}e)s", "%({server_name}e)s",
    "%({server_port}e)s", "%({server_protocol}e)s", "%({wsgi.url_scheme}e)s",
    "%({script_name}e)s", "%({content_length}e)s", "%({not_there}e)s", "100%%",
    # Masked below: the clock, durations and the pid.
    "%(t)s", "%(T)s", "%(D)s", "%(M)s", "%(L)s", "%(p)s",
]
FORMAT = "\t".join(FIELDS)
MASKS = [
    (r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", "[TIME]"),
    (r"\t\d+\t\d+\t\d+\t\d+\.\d{6}\t<\d+>$", "\tT\tD\tM\tL\t<PID>"),
]

REQUESTS = [
    b"GET /caf%C3%A9?q=1&r=%22x%22 HTTP/1.1\r\nHost: example.com:8080\r\n"
    b"User-Agent: UA \"quoted\"\r\nReferer: http://ref/\r\nAuthorization: Basic Ym9iOnB3\r\n"
    b"X-Custom: v1\r\nX-Custom: v2\r\nConnection: close\r\n\r\n",
    b"GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"POST /echo?x HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello",
    b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET /empty HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /? HTTP/1.1\r\nHost: [::1]:81\r\nUser-Agent: caf\xe9\r\nConnection: close\r\n\r\n",
    b"GET /a%2Fb%zz HTTP/1.1\r\nHost: h\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer Ym9iOnB3\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: basic  dXNlciAi8J+YgCI6eA==\r\nConnection: close\r\n\r\n",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_all(port):
    for request in REQUESTS:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            while s.recv(65536):
                pass


def wait_port(port, proc, seconds=30):
    until = time.time() + seconds
    while time.time() < until:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def lines_of(command, log, port):
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        send_all(port)
        until = time.time() + 15
        while time.time() < until:
            text = open(log, "rb").read().decode("utf-8") if os.path.exists(log) else ""
            if text.count("\n") >= len(REQUESTS):
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
    lines = open(log, "rb").read().decode("utf-8").splitlines()
    for pattern, replacement in MASKS + [(f"\t{port}\t", "\tPORT\t")]:
        lines = [re.sub(pattern, replacement, line) for line in lines]
    return lines


def main():
    work = tempfile.mkdtemp(prefix="rwsgi-al-")
    try:
        g_port, r_port = free_port(), free_port()
        g_log, r_log = os.path.join(work, "gunicorn.log"), os.path.join(work, "rwsgi.log")
        gunicorn = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{g_port}",
                    "--chdir", os.path.join(ROOT, "bench", "peers"), "--access-logfile", g_log,
                    "--access-logformat", FORMAT, "access_log_app:app"]
        rwsgi = ["node", os.path.join(ROOT, "dist", "cli", "main.js"), "serve",
                 os.path.join(ROOT, "test", "fixtures", "access-log-app.mjs"), "-w", "1",
                 "-b", f"127.0.0.1:{r_port}", "--access-logfile", r_log, "--access-logformat", FORMAT]
        expected = lines_of(gunicorn, g_log, g_port)
        got = lines_of(rwsgi, r_log, r_port)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    differ = [(e, g) for e, g in zip(expected, got) if e != g]
    if len(expected) != len(got) or differ:
        print(f"gunicorn wrote {len(expected)} lines, rwsgi {len(got)}")
        for e, g in differ:
            print(f"gunicorn: {e!r}\nrwsgi:    {g!r}")
        return 1
    print(f"{len(got)} lines identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
