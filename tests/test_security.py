"""Security rules checked on every test run (cheap: no model is loaded).

- No pickle in the code: no `pickle`/`dill`/`joblib` loads, `torch.load` only with weights_only=True,
  numpy loads without allow_pickle=True.
- No `trust_remote_code=True` default anywhere in src.
- With a token, every route but /health and the docs answers 401 without it or with a wrong one.
- Upload names with a folder, `..`, an absolute path, a backslash or a NUL are refused (400);
  a Windows path ("C:\\x.txt") is cut to its last part by the multipart parser before the app
  sees it, so it is stored as the bare name inside uploads/ (no escape, but not refused either).
(scripts/reliability/security.py checks the same on a running server and scans stored data.)
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rearqa"
TOKEN = "security-token-0123456789"
OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

UNSAFE_CODE = {
    "pickle-family import": re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle)\b", re.M),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "trust_remote_code=True": re.compile(r"trust_remote_code\s*(:\s*bool\s*)?=\s*True"),
}


def unsafe_lines(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for rule, pattern in UNSAFE_CODE.items():
            for match in pattern.finditer(text):
                found.append(f"{path}:{text.count(chr(10), 0, match.start()) + 1}: {rule}")
    return found


def test_the_source_loads_no_pickle_and_trusts_no_remote_code():
    assert unsafe_lines(SRC) == []


def test_the_scan_catches_what_it_looks_for(tmp_path):
    (tmp_path / "bad.py").write_text("import pickle\nx = torch.load(f)\ny = torch.load(f, weights_only=True)\n"
                                     "np.load(p, allow_pickle=True)\ntrust_remote_code: bool = True\n")
    rules = [line.split(": ", 1)[1] for line in unsafe_lines(tmp_path)]
    assert sorted(rules) == sorted(UNSAFE_CODE)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from fastapi.testclient import TestClient

    from rearqa.app.server import create_app
    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline
    from rearqa.retriever import RetrieverConfig

    # warm=False: the pipeline opens only for the one name that passes the checks (C:\evil.txt)
    config = PipelineConfig(retriever=RetrieverConfig(collection="security"))
    app = create_app(Pipeline(config, home=tmp_path_factory.mktemp("home")), token=TOKEN, warm=False)
    return app, TestClient(app)


def test_every_route_but_health_and_docs_needs_the_token(guarded):
    app, client = guarded
    routes = [(method, route.path) for route in app.routes for method in getattr(route, "methods", ())
              if route.path not in OPEN_PATHS and method != "HEAD"]
    assert len(routes) >= 7
    for method, path in routes:
        url = path.replace("{doc_id:path}", "x").replace("{doc_id}", "x")
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            response = client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.status_code)


@pytest.mark.parametrize("name", ["../evil.txt", "..\\evil.txt", "/etc/evil.txt", "C:\\evil.txt", "a/b.txt",
                                  "evil.txt\x00.pdf", "..", ".hidden.txt", "%2e%2e%2fevil.txt"])
def test_upload_names_that_could_leave_the_folder_are_400(guarded, name):
    _, client = guarded
    response = client.post("/documents", headers={"Authorization": f"Bearer {TOKEN}"},
                           files={"file": (name, b"some text")})
    assert response.status_code == 400 or response.status_code == 201 and response.json()["filename"] == "evil.txt", \
        (name, response.status_code, response.text)
