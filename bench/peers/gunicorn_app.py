"""gunicorn's sync workers serving the benchmark routes (WSGI)."""
import json

HELLO = b"Hello, World!"
JSON_4K = json.dumps(
    {"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "ok": i % 2 == 0} for i in range(48)]},
    separators=(",", ":"),
).ljust(4096).encode()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/json":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [JSON_4K]
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [HELLO]
