"""What an outsider sees of the deployment: no versions in the Server header, HSTS over HTTPS,
every imported library declared, a lock file for reproducible installs, and `siyu db upgrade`
saying what to fix instead of printing a traceback."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.metadata
import re
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.app.web import create_app
from tests.security.support import hostile_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "flows", "handlers", "storage")


async def test_the_server_header_names_no_versions(aiohttp_client, example_settings, sqlite_url, fake_api):
    client = await aiohttp_client(create_app(hostile_settings(example_settings, sqlite_url, fake_api.base_url)))
    for path in ("/healthz", "/metrics", "/simulator/", "/no/such/page", "/console/login"):
        response = await client.get(path)
        server = response.headers.get("Server", "")
        assert not re.search(r"\d|python|aiohttp", server, re.IGNORECASE), (path, server)
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP: HSTS means nothing


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


async def test_hsts_is_sent_when_the_request_is_https(aiohttp_server, example_settings, sqlite_url, fake_api,
                                                      tmp_path):
    app = create_app(hostile_settings(example_settings, sqlite_url, fake_api.base_url))
    server = await aiohttp_server(app, ssl=_self_signed(tmp_path))
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.make_url("/healthz"), ssl=False)
        assert str(response.url).startswith("https://")
        hsts = response.headers.get("Strict-Transport-Security", "")
        assert re.fullmatch(r"max-age=\d{7,}; includeSubDomains", hsts), hsts
        assert not re.search(r"\d", response.headers.get("Server", ""))


def _imported_libraries() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in PACKAGES}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_normal(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]): spec for spec in project["dependencies"]}


def test_every_imported_library_is_declared_with_bounds():
    declared = _declared()
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(_imported_libraries()):
        names = {_normal(d) for d in distributions.get(module, [module])}
        spec = next((declared[n] for n in names if n in declared), None)
        assert spec is not None, f"{module} is imported but not declared in pyproject.toml"
        assert ">=" in spec and "<" in spec.replace("<=", ""), f"{spec} needs a lower and an upper bound"


def test_the_lock_file_pins_every_declared_dependency():
    pinned = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if found:
            pinned[_normal(found.group(1))] = found.group(2)
    for name in _declared():
        assert name in pinned, f"{name} is not pinned in requirements.lock"


def test_db_upgrade_into_a_missing_folder_says_what_to_fix(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "siyu.db"
    done = subprocess.run([sys.executable, "-m", "bot", "db", "upgrade", "--url", f"sqlite+aiosqlite:///{missing}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(missing.parent) in done.stderr and "does not exist" in done.stderr
