"""The app of test/fixtures/access-log-app.mjs for gunicorn (WSGI), for
bench/access-log-vs-gunicorn.py."""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("X-Out", 'o"1')])
        return [b"nope"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Out", "echo")])
        return [body]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Out", 'o"1')])
    return [b"hello"]
