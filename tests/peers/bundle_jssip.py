"""Builds the JsSIP browser bundle the Chromium interop test loads.

JsSIP ships CommonJS modules only, so this fetches the pinned npm tarballs of JsSIP
and its dependencies (checking each against the registry's SHA-1), and wraps every
module into one script with a tiny synchronous `require`: the page then has
`window.JsSIP`. No Node.js needed.

usage: bundle_jssip.py OUT_DIR      (writes OUT_DIR/jssip.bundle.js)
"""

import hashlib
import io
import json
import os
import posixpath
import sys
import tarfile
import urllib.request

# name, version, SHA-1 of the tarball (from the npm registry), entry (browser field)
PACKAGES = [
    ("jssip", "3.13.8", "ab5716c82a11f8a4afe1b1b7124772335fbf6404", "lib/JsSIP.js"),
    ("debug", "4.4.3", "c6ae432d9bd9662582fce08709b038c58e9e3d6a", "src/browser.js"),
    ("ms", "2.1.3", "574c8138ce1d2b5861f0b44579dbadd60c6615b2", "index.js"),
    ("events", "3.3.0", "31a95ad0a924e2d2c419a813aeb2c4e878ea7400", "events.js"),
    ("sdp-transform", "2.15.0", "79d37a2481916f36a0534e07b32ceaa87f71df42", "lib/index.js"),
]

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
modules = {}  # "pkg/path.js" -> source
entries = {}
for name, version, sha1, entry in PACKAGES:
    url = f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
    data = urllib.request.urlopen(url, timeout=60).read()
    if hashlib.sha1(data).hexdigest() != sha1:
        sys.exit(f"bundle_jssip: {url} does not match its pinned SHA-1")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and (member.name.endswith(".js") or member.name.endswith(".json")):
                path = member.name.split("/", 1)[1]
                modules[f"{name}/{path}"] = tar.extractfile(member).read().decode("utf-8")
    entries[name] = f"{name}/{entry}"

parts = [
    "(function(){\n'use strict';\nvar defs={}, cache={}, entries=" + json.dumps(entries) + ";\n",
    "function resolve(from, req){\n"
    "  if(entries[req]) return entries[req];\n"
    "  var base = from.split('/').slice(0,-1).join('/');\n"
    "  var parts = (base + '/' + req).split('/'), out = [];\n"
    "  for (var i=0;i<parts.length;i++){ if(parts[i]==='..') out.pop(); else if(parts[i]!=='.'&&parts[i]!=='') out.push(parts[i]); }\n"
    "  var p = out.join('/');\n"
    "  var tries = [p, p + '.js', p + '.json', p + '/index.js'];\n"
    "  for (var j=0;j<tries.length;j++){ if(defs[tries[j]]) return tries[j]; }\n"
    "  throw new Error('bundle: cannot find ' + req + ' from ' + from);\n"
    "}\n"
    "function load(id){\n"
    "  if(cache[id]) return cache[id].exports;\n"
    "  var module = {exports:{}}; cache[id] = module;\n"
    "  defs[id](module, module.exports, function(r){ return load(resolve(id, r)); });\n"
    "  return module.exports;\n"
    "}\n",
]
for path, source in sorted(modules.items()):
    if path.endswith(".json"):
        body = "module.exports = " + source + ";"
    elif source.startswith("#!"):
        body = "//" + source  # a command-line script's shebang
    else:
        body = source
    parts.append(
        "defs[" + json.dumps(path) + "] = function(module, exports, require){\n"
        "var process = {env:{}, browser:true};\n" + body + "\n};\n"
    )
parts.append("window.JsSIP = load(entries['jssip']);\n})();\n")
with open(os.path.join(out_dir, "jssip.bundle.js"), "w") as f:
    f.write("".join(parts))
