"""Small real data and tiny configurations shared by the tracking, serving and flow tests."""

from __future__ import annotations

import ipaddress
import socket
import string
import struct
import time
import unicodedata
import zipfile
from pathlib import Path

import httpx

from pipeline.config import DataConfig, ModelConfig, PipelineConfig, SplitConfig, TrainConfig

ALPHABET = string.ascii_letters + " .,;'"
# written out here, not imported from pipeline: the tests' own reference
TYPOGRAPHIC_APOSTROPHES = "\u2018\u2019\u201b\u02bb\u02bc\uff07"


def reference_ascii(s: str) -> str:
    """Our normalization, independently of pipeline/: the notebook's unicodeToAscii (NFD, combining
    marks dropped), but '_' for a character outside the alphabet instead of nothing, "'" for a
    typographic apostrophe, and invisible format characters (Cf) dropped as the marks are."""
    return "".join("'" if c in TYPOGRAPHIC_APOSTROPHES else c if c in ALPHABET else "_"
                   for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) not in ("Mn", "Cf"))


SHARED_NAMES = Path(__file__).resolve().parents[2] / "shared/data/names"
SMALL_LANGUAGES = ("Arabic", "Chinese", "Japanese", "Russian", "Greek", "Italian")


def small_names_folder(root: Path, per_language: int = 60, languages: tuple[str, ...] = SMALL_LANGUAGES) -> Path:
    """The first `per_language` lines of a few real files: learnable in seconds."""
    folder = root / "names"
    folder.mkdir(parents=True, exist_ok=True)
    for language in languages:
        lines = (SHARED_NAMES / f"{language}.txt").read_text(encoding="utf-8").splitlines()[:per_language]
        (folder / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tiny_config(root: Path, source: Path | str, epochs: int = 3, **train: object) -> PipelineConfig:
    """Every path under `root`; a model small enough to train in a second or two."""
    return PipelineConfig(
        data=DataConfig(source=str(source), raw_dir=root / "data/raw", processed_dir=root / "data/processed",
                        models_dir=root / "data/models", cache_dir=root / "data/cache", download_retries=0),
        split=SplitConfig(seed=7),
        model=ModelConfig(embedding_dim=16, hidden_size=32, ngram_buckets=2048, ngram_dim=16),
        train=TrainConfig(**{"epochs": epochs, "batch_size": 32, "learning_rate": 1e-2, "progress": False,
                             "checkpoint_dir": root / "checkpoints", **train}),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stops_answering(url: str, within_s: float = 30) -> bool:
    """Whether nothing listens at `url` any more within `within_s`: only a refused connection counts."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return True  # nobody listening any more
        except httpx.TimeoutException:
            pass  # alive but slow (a loaded machine), or hung: not stopped
        except httpx.TransportError:
            pass  # connected, then reset: the server is on its way down, not yet gone
        time.sleep(0.5)
    return False


def wait_for_http(url: str, timeout_s: float = 90.0, proc=None) -> None:
    """Poll `url` until it answers 200 (or the process dies, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no public authority signed (a team's own CA, in effect), and
    its key: (cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "namelang test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path



def damage_a_tensor(path: Path) -> None:
    """Change one byte inside the largest tensor of a file torch.save wrote (its data, not a zip header):
    torch's reader loads that without a word."""
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    header = largest.header_offset
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])  # the local header's
    data[header + 30 + name_length + extra_length + largest.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
