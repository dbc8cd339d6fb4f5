#!/usr/bin/env python3
"""Independent verifier of provisiond's signing test vectors.

Written from docs/explorer-api.md ("Canonical bytes: what owners and nodes
sign") alone, with Python's standard library and `openssl pkeyutl` for
Ed25519: it shares no code with provisiond. For every reservation, delete
and result in a vectors file (provision/testdata/vectors.json) it derives the
signed bytes from the document, compares them with the bytes the file
records, and has openssl verify the signature; every forgery must fail.

Usage: verify-vectors.py VECTORS.json
Exit status 0 when every check holds, 1 otherwise.
"""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(s):
    n = 0
    for ch in s:
        i = B58.find(ch)
        if i < 0:
            raise ValueError("not base58: %r" % s)
        n = n * 58 + i
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    zeros = len(s) - len(s.lstrip("1"))
    return b"\0" * zeros + body


def node_key(node_id):
    key = b58decode(node_id)
    if len(key) != 32:
        raise ValueError("node_id %s decodes to %d bytes, not 32" % (node_id, len(key)))
    return key


def frame(fields):
    out = b""
    for f in fields:
        b = f if isinstance(f, bytes) else f.encode("utf-8")
        out += struct.pack(">I", len(b)) + b
    return out


def members(text):
    """Returns the top-level members of a JSON object as {name: raw value text}."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = 0

    def skip(i):
        while i < len(text) and text[i] in ws:
            i += 1
        return i

    i = skip(i)
    if text[i] != "{":
        raise ValueError("not a JSON object")
    i = skip(i + 1)
    out = {}
    if text[i] == "}":
        return out
    while True:
        name, i = dec.raw_decode(text, i)
        i = skip(i)
        if text[i] != ":":
            raise ValueError("expected ':'")
        i = skip(i + 1)
        start = i
        _, i = dec.raw_decode(text, i)
        out[name] = text[start:i]
        i = skip(i)
        if text[i] == "}":
            return out
        if text[i] != ",":
            raise ValueError("expected ',' or '}'")
        i = skip(i + 1)


def canonical_data(raw):
    """Compacts a JSON value's text and escapes < > & U+2028 U+2029."""
    if raw is None:
        return b""
    out = []
    in_string = escaped = False
    for ch in raw:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch in " \t\r\n":
            continue
        else:
            out.append(ch)
            if ch == '"':
                in_string = True
    text = "".join(out)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode("utf-8")


TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


def created(text):
    m = TIME.match(text)
    if not m:
        raise ValueError("created %r is not RFC 3339" % text)
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "").ljust(9, "0")
    zone = m.group(8)
    t = datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        t -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    out = t.strftime("%Y-%m-%dT%H:%M:%S")
    if int(frac):
        out += "." + frac.rstrip("0")
    return out + "Z"


def decimal(raw, default="0"):
    if raw is None:
        return default
    v = json.loads(raw)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError("not a non-negative integer: %s" % raw)
    return str(v)


def string(m, name):
    return json.loads(m[name]) if name in m else ""


def reservation_bytes(m):
    return frame(["provisiond/reservation/v1", string(m, "node_id"), string(m, "user_id"),
                  string(m, "type"), created(json.loads(m["created"])), decimal(m.get("duration")),
                  string(m, "reference"), decimal(m.get("version")), canonical_data(m.get("data"))])


def delete_bytes(rid, digest):
    return frame(["provisiond/delete/v1", rid, digest])


def result_bytes(m):
    return frame(["provisiond/result/v1", string(m, "node_id"), string(m, "id"), string(m, "digest"),
                  decimal(m.get("version")), string(m, "state"), created(json.loads(m["created"])),
                  string(m, "message"), canonical_data(m.get("data"))])


def ed25519_verify(pub, msg, sig_hex):
    if not re.fullmatch(r"[0-9a-f]{128}", sig_hex or ""):
        return False
    der = bytes.fromhex("302a300506032b6570032100") + pub
    pem = "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n" % __import__("base64").b64encode(der).decode()
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, content in (("pub.pem", pem.encode()), ("msg", msg), ("sig", bytes.fromhex(sig_hex))):
            paths[name] = os.path.join(d, name)
            with open(paths[name], "wb") as f:
                f.write(content)
        r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["pub.pem"],
                            "-rawin", "-in", paths["msg"], "-sigfile", paths["sig"]],
                           capture_output=True, text=True)
        return r.returncode == 0 and "Signature Verified Successfully" in r.stdout


class Checker:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s %s" % (name, detail))



def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vectors = json.loads(text)
    # Re-read each document from the file's own text, so data keeps the
    # spelling (spaces, escapes, numbers) the file gives it.
    raw = members(text)
    docs = {k: json.loads(raw[k]) for k in raw}
    c = Checker()
    raw_sections = {}
    for section in ("reservations", "encodings", "results", "forgeries"):
        arr = raw.get(section)
        raw_sections[section] = [] if arr is None else split_array(arr)
    c.check("node_id-decodes", node_key(docs["node_id"]).hex() == docs["node_public"])

    for section in ("reservations", "encodings"):
        for v, vraw in zip(vectors[section], raw_sections[section]):
            name = section + "/" + v["name"]
            m = members(members(vraw)["reservation"])
            msg = reservation_bytes(m)
            c.check(name + "/bytes", msg.hex() == v["challenge"], "derived %s" % msg.hex())
            digest = hashlib.sha256(msg).hexdigest()
            c.check(name + "/digest", digest == v["digest"])
            pub = bytes.fromhex(json.loads(m["user_id"]))
            c.check(name + "/signature", ed25519_verify(pub, msg, json.loads(m["signature"])))
            dmsg = delete_bytes(json.loads(m["id"]), digest)
            c.check(name + "/delete-bytes", dmsg.hex() == v["delete_challenge"])
            c.check(name + "/delete-signature", ed25519_verify(pub, dmsg, v["delete_signature"]))

    for v, vraw in zip(vectors["results"], raw_sections["results"]):
        name = "results/" + v["name"]
        m = members(members(vraw)["result"])
        msg = result_bytes(m)
        c.check(name + "/bytes", msg.hex() == v["bytes"], "derived %s" % msg.hex())
        c.check(name + "/signature", ed25519_verify(node_key(json.loads(m["node_id"])), msg, json.loads(m["signature"])))

    for v, vraw in zip(vectors["forgeries"], raw_sections["forgeries"]):
        name = "forgeries/" + v["name"]
        vm = members(vraw)
        if "result" in vm:
            m = members(vm["result"])
            ok = ed25519_verify(node_key(json.loads(m["node_id"])), result_bytes(m), json.loads(m["signature"]))
        else:
            m = members(vm["reservation"])
            msg = reservation_bytes(m)
            pub = bytes.fromhex(json.loads(m["user_id"]))
            ok = ed25519_verify(pub, msg, json.loads(m["signature"]))
            if json.loads(m.get("to_delete", "false")):
                # The reservation is genuine; its delete is the forgery.
                c.check(name + "/reservation", ok)
                ok = ed25519_verify(pub, delete_bytes(json.loads(m["id"]), hashlib.sha256(msg).hexdigest()),
                                    json.loads(m["delete_signature"]))
        c.check(name + "/refused", not ok)

    print("%d passed, %d failed" % (c.passed, c.failed))
    return 0 if c.failed == 0 and c.passed > 0 else 1


def split_array(text):
    """Returns the raw texts of the elements of a JSON array's text."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = 0
    while text[i] in ws:
        i += 1
    if text[i] != "[":
        raise ValueError("not a JSON array")
    i += 1
    out = []
    while True:
        while text[i] in ws:
            i += 1
        if text[i] == "]":
            return out
        start = i
        _, i = dec.raw_decode(text, i)
        out.append(text[start:i])
        while text[i] in ws:
            i += 1
        if text[i] == ",":
            i += 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
