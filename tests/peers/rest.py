#!/usr/bin/env python3
"""One REST request with HTTP basic authentication, from a lab host.

Usage: rest.py METHOD URL USER PASSWORD [CONTENT_TYPE BODY]. CONTENT_TYPE `form` takes
BODY as a JSON object and sends it form-encoded. Prints the status and the body on one
line (`201 {...}`), whatever the status.
"""
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

method, url, user, password = sys.argv[1:5]
content_type, body = (sys.argv[5], sys.argv[6].encode()) if len(sys.argv) > 6 else (None, None)
if content_type == "form":
    content_type = "application/x-www-form-urlencoded"
    body = urllib.parse.urlencode(json.loads(body)).encode()
req = urllib.request.Request(url, data=body, method=method)
req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
if content_type:
    req.add_header("Content-Type", content_type)
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        status, out = r.status, r.read()
except urllib.error.HTTPError as e:
    status, out = e.code, e.read()
print(status, out.decode().replace("\n", " "), flush=True)
