#!/usr/bin/env python3
"""A Twilio-style application for the webhook interop test.

Every request is checked with Twilio's own helper library (PyPI `twilio`,
`RequestValidator`) against the auth token, exactly as an application behind Twilio
checks it; an invalid one gets 403. Valid requests are answered with TwiML built by
Twilio's TwiML builder (`VoiceResponse`), per path.

Usage: twilio_app.py AUTH_TOKEN CERT KEY [ADDRESS] (CERT and KEY: serve HTTPS with
them; "-" for plain HTTP; ADDRESS: where to listen, 127.0.0.1 unless given). Prints
`listening PORT`, then one JSON line per request: method, path, whether its signature
was valid, its parameters. A voice request for `To=client:slow` is answered only after
SLOW_SECS seconds (a slow application, for the server's webhook timeout).
"""
import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

TOKEN, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
ADDRESS = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
SLOW_SECS = 6
SCHEME = "http" if CERT == "-" else "https"
validator = RequestValidator(TOKEN)


def twiml(path):
    """The application's answer for each path, from Twilio's TwiML builder."""
    r = VoiceResponse()
    if path == "/voice":
        # POSTed; its action is asked with GET.
        d = Dial(action="/after", method="GET", timeout=20, caller_id="client:alice")
        d.client("bob")
        r.append(d)
    elif path == "/voice-get":
        d = Dial(action="after-get", timeout=20)
        d.client("bob")
        r.append(d)
    elif path in ("/after", "/after-get"):
        r.hangup()
    elif path == "/reject":
        r.reject(reason="busy")
    elif path == "/pause":
        r.pause(length=1)
        d = Dial()
        d.client("bob")
        r.append(d)
    else:
        r.hangup()
    return str(r)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = f"{SCHEME}://{self.headers['Host']}{self.path}"
        if method == "POST":
            params = dict(parse_qsl(body, keep_blank_values=True))
            signed = params
        else:
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            signed = {}
        valid = validator.validate(url, signed, self.headers.get("X-Twilio-Signature", ""))
        path = urlsplit(self.path).path
        print(json.dumps({"method": method, "path": path, "valid": valid, "params": params}), flush=True)
        if valid and params.get("To") == "client:slow":
            time.sleep(SLOW_SECS)
        if not valid:
            out, status, ctype = b"invalid signature", 403, "text/plain"
        elif path == "/messages":
            out, status, ctype = b"", 204, "text/plain"
        else:
            out, status, ctype = twiml(path).encode(), 200, "application/xml"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")


server = ThreadingHTTPServer((ADDRESS, 0), Handler)
if CERT != "-":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, KEY)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
