"""Security checks on stored data, the source and a running server.

    .venv/bin/python scripts/reliability/security.py --out docs/results/reliability-security.json

1. No pickle in stored data: every file under the data home (links followed: models, corpus,
   downloads, indexes, caches) and under a collection built here is checked for a pickle-like
   suffix (.pkl .pickle .pt .pth .bin .ckpt .joblib), a pickle protocol header (0x80 0x02-0x05),
   a .npy of object dtype, or a zip archive (wheels, torch zips) holding any of those.
2. No pickle loads and no `trust_remote_code=True` in src (the rules of tests/test_security.py).
3. A running `rearqa serve --token` refuses upload names that could leave the uploads folder
   (../, ..\\, absolute paths, folders, NUL, a leading dot) with 400, and no file appears
   outside uploads/.
4. The same server answers 401 without the token and with a wrong one on every operation of its
   OpenAPI schema except /health.
Prints each finding, writes JSON, exits 1 when any check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx

from live_server import MINI_CORPUS, REPO, LiveServer, scratch_home

sys.path.insert(0, str(REPO / "tests"))
from test_security import SRC, unsafe_lines  # noqa: E402  (one set of source rules)

TOKEN = "security-token-0123456789"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib"}
BAD_NAMES = ["../evil.txt", "..\\evil.txt", "/tmp/evil.txt", "a/b.txt", "a\\b.txt", "evil.txt\x00.pdf", "..",
             ".hidden.txt", "%2e%2e%2fevil.txt", "....//evil.txt", "C:\\evil.txt"]


def pickle_like(name: str, head: bytes) -> str | None:
    """Why a file with this name and first bytes may hold a pickle, or None."""
    if Path(name).suffix.lower() in PICKLE_SUFFIXES:
        return f"suffix {Path(name).suffix}"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"pickle protocol {head[1]} header"
    if head.startswith(b"\x93NUMPY") and b"'descr': '|O'" in head:
        return "numpy object array (needs allow_pickle)"
    return None


def scan_data(roots: list[Path]) -> tuple[int, list[str]]:
    """(files checked, findings) for every file under `roots` (links followed, zip members too)."""
    checked, findings = 0, []
    for root in roots:
        for folder, _, names in os.walk(root, followlinks=True):
            for name in names:
                path = Path(folder) / name
                checked += 1
                with open(path, "rb") as f:
                    head = f.read(256)
                if why := pickle_like(name, head):
                    findings.append(f"{path}: {why}")
                if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
                    with zipfile.ZipFile(path) as archive:
                        for member in archive.namelist():
                            if not member.endswith("/"):
                                with archive.open(member) as f:
                                    inner = f.read(256)
                                if why := pickle_like(member, inner):
                                    findings.append(f"{path}!{member}: {why}")
    return checked, findings


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart body with the file name as raw bytes (clients escape what this must send)."""
    boundary = "rearqa-security-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".encode()
            + name.encode("utf-8", "surrogatepass") + b"\"\r\nContent-Type: text/plain\r\n\r\n" + data
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def check_upload_names(server: LiveServer, http: httpx.Client) -> list[dict]:
    rows = []
    for name in BAD_NAMES:
        body, content_type = multipart(name, b"a document that must not land outside uploads")
        response = http.post(f"{server.url}/documents", content=body,
                             headers={**server.headers, "Content-Type": content_type})
        stored = response.json().get("filename") if response.status_code == 201 else None
        rows.append({"name": name, "status": response.status_code, "stored_as": stored,
                     "ok": response.status_code == 400 or (response.status_code == 201 and "/" not in stored
                                                            and "\\" not in stored and not stored.startswith("."))})
    return rows


def escaped_files(home: Path, tmp_root: Path) -> list[str]:
    """evil.txt anywhere but the collection's uploads folder (the data home and the temp root)."""
    return [str(p) for root in (home, tmp_root) for p in root.rglob("evil.txt*")
            if p.parent.name != "uploads"]


def check_auth(server: LiveServer, http: httpx.Client) -> list[dict]:
    schema = http.get(f"{server.url}/openapi.json").json()
    rows = []
    for path, operations in schema["paths"].items():
        if path == "/health":
            continue
        url = server.url + path.replace("{doc_id}", "x")
        for method in operations:
            for label, headers in (("none", {}), ("wrong", {"Authorization": "Bearer wrong-token-0123456789"})):
                status = http.request(method.upper(), url, headers=headers, json={}).status_code
                rows.append({"operation": f"{method.upper()} {path}", "token": label, "status": status,
                             "ok": status == 401})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="data home to scan (default: the prepared one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reliability-security.json")
    args = parser.parse_args()
    from rearqa import assets

    data_home = args.home or assets.ensure_prepared(progress=False)
    with tempfile.TemporaryDirectory(prefix="rearqa-security-") as tmp:
        home = scratch_home(Path(tmp) / "home")
        with LiveServer(home, collection="security", token=TOKEN, log_path=Path(tmp) / "server.log") as server:
            server.start()
            with httpx.Client(timeout=120) as http:
                server.upload(http, "mini_corpus.jsonl", MINI_CORPUS.read_bytes()).raise_for_status()
                names = check_upload_names(server, http)
                auth = check_auth(server, http)
                refused_right_token = http.get(f"{server.url}/documents", headers=server.headers).status_code
        escaped = escaped_files(home, Path(tmp))
        checked, findings = scan_data([data_home, home / "indexes"])
    source = unsafe_lines(SRC)
    checks = {"no pickle-like file in the data home or a built collection": not findings,
              "no pickle load or trust_remote_code=True in src": not source,
              "every traversing upload name refused or cut to a bare name": all(r["ok"] for r in names),
              "no uploaded file outside uploads/": not escaped,
              "401 without or with a wrong token on every guarded operation": all(r["ok"] for r in auth),
              "the right token is accepted": refused_right_token == 200}
    print(f"scanned {checked} files under {data_home} and a built collection: {len(findings)} pickle-like")
    for finding in findings + source:
        print(f"  {finding}")
    print(f"{'upload name':<22} {'status':>6}  stored as")
    for row in names:
        print(f"{row['name']!r:<22} {row['status']:>6}  {row['stored_as'] or '-'}")
    statuses = sorted({r["status"] for r in auth})
    print(f"auth: {len(auth)} requests over {len(auth) // 2} operations without / with a wrong token: "
          f"statuses {statuses}")
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data_home": str(data_home), "files_scanned": checked, "pickle_like": findings,
                                    "unsafe_source": source, "upload_names": names, "escaped": escaped,
                                    "auth": auth, "checks": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
