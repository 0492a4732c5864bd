#!/usr/bin/env python3
"""A file server for the pull transport's bad-input tests: serves ROOT with HEAD and single-range GETs like
`deltasync serve-files`, except for the fault MODE it injects:
  ok            behave
  truncate      send the right headers, then half the body, then close
  wrong_length  announce a Content-Length 10 bytes longer than the range
  error_mid     answer the first GET, then 500 for every later GET
  head_lies     HEAD announces 100 bytes more than the file holds
Usage: pull_fault_server.py ROOT PORT_FILE MODE [PORT]  (PORT 0 or absent: an ephemeral port)"""
import http.server
import os
import socketserver
import sys

root, port_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
listen_port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
gets = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver hung up after spotting the fault: expected

    def locate(self):
        path = os.path.realpath(os.path.join(root, self.path.lstrip("/")))
        if not path.startswith(os.path.realpath(root) + "/") or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return path

    def do_HEAD(self):
        path = self.locate()
        if path is None:
            return
        size = os.path.getsize(path) + (100 if mode == "head_lies" else 0)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()

    def do_GET(self):
        global gets
        path = self.locate()
        if path is None:
            return
        gets += 1
        if mode == "error_mid" and gets > 1:
            body = b"injected failure\n"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = os.path.getsize(path)
        first, last = 0, size - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            a, b = rng[6:].split("-")
            first, last = int(a), min(int(b), size - 1)
        if first >= size:
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, size))
        self.send_header("Content-Length", str(len(data) + (10 if mode == "wrong_length" else 0)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)
        if mode == "wrong_length":
            self.close_connection = True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", listen_port), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write("%d\n" % srv.server_address[1])
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
