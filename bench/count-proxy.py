#!/usr/bin/env python3
"""A forward HTTP proxy that counts what passes: each request's URL, status and body bytes, one
tab-separated line per request in LOG. For bench/cache-mounts.sh: how much a build downloads.

    count-proxy.py ADDR PORT LOG
"""
import http.client
import http.server
import sys
import urllib.parse

ADDR, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
       "proxy-authorization", "proxy-authenticate", "trailer"}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self, body_allowed=True):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            # Not a proxy request (a readiness probe): nothing to forward or count.
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        path = url.path + ("?" + url.query if url.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, path or "/", headers=headers)
        resp = conn.getresponse()
        data = resp.read() if body_allowed else b""
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body_allowed:
            self.wfile.write(data)
        with open(LOG, "a") as f:
            f.write(f"{self.command}\t{resp.status}\t{len(data)}\t{self.path}\n")
        conn.close()

    def do_GET(self):
        self.relay()

    def do_HEAD(self):
        self.relay(body_allowed=False)


http.server.ThreadingHTTPServer((ADDR, PORT), Proxy).serve_forever()
