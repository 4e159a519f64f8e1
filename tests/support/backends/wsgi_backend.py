"""A stock WSGI application on wsgiref (Python's own server), dispatching
on PATH_INFO, which PEP 3333 has the server percent-decode. Prints
`PORT n` once listening on 127.0.0.1; answers `handler=NAME path=PATH`.
Used by tests/path_backends.rs."""

import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "")
    if path == "/account" and method == "GET":
        handler = "account"
    elif path == "/pay" and method == "POST":
        handler = "pay"
    elif path.startswith("/admin/") and method == "GET":
        handler = "admin"
    else:
        handler = "other"
    body = f"handler={handler} path={path}".encode("utf-8", "backslashreplace")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(f"PORT {server.server_port}", flush=True)
server.serve_forever()
