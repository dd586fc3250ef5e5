"""The one credential filter: which files never leave the machine in a snapshot.

Every path of a code snapshot passes through :func:`why_secret`. It matches, case-
insensitively, every part of the path (a file's name, or a folder above it)
against the classes of credential files that developers of this field keep in
projects and home folders, then looks inside small files for key material that
has no telltale name (a private key block; a JSON key with a private key, a
refresh token or a client secret). orch's own configured credential files are
passed in by the caller (``extra``) and excluded whatever their name.

Nothing here reads settings or the disk beyond the file it is asked about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: Text formats a secrets file comes in (``secrets.py`` is code, ``secrets.toml`` is not).
DATA_EXTENSIONS = ("json", "yaml", "yml", "toml", "ini", "cfg", "conf", "txt", "env", "xml")


@dataclass(frozen=True)
class Rule:
    """A class of credential files: glob patterns (lower case) for a path part."""

    what: str
    names: tuple[str, ...]
    folder: bool = False  # the patterns name a folder: everything below it is left out


RULES: tuple[Rule, ...] = (
    Rule("SSH keys and settings", (".ssh",), folder=True),
    Rule("an SSH private key", ("id_rsa", "id_rsa.*", "id_dsa", "id_dsa.*", "id_ecdsa",
                                "id_ecdsa.*", "id_ed25519", "id_ed25519.*", "id_ecdsa_sk",
                                "id_ed25519_sk", "*_rsa", "*_ed25519", "*.ppk")),
    Rule("a private key or certificate store", ("*.pem", "*.key", "*.p12", "*.pfx", "*.p8",
                                                "*.jks", "*.keystore", "*.kdbx",
                                                "secring.*")),
    Rule("GnuPG keys", (".gnupg",), folder=True),
    Rule("a dotenv file", (".env", ".env.*", "*.env", ".envrc")),
    Rule("a secrets file", (".secrets", "*.secrets", "*.secret", "credentials", ".htpasswd",
                            ".git-credentials", "*.credentials", "credentials*.json",
                            *(f"{stem}.{ext}" for stem in ("secret", "secrets", "credentials")
                              for ext in DATA_EXTENSIONS))),
    Rule("cloud credentials", (".aws", ".azure", "gcloud", ".kube", ".oci", ".terraform.d"),
         folder=True),
    Rule("cloud credentials", ("application_default_credentials.json", "*service_account*",
                               "*service-account*", "*serviceaccount*", "kubeconfig",
                               ".boto", ".s3cfg", "rclone.conf", ".databrickscfg",
                               "terraform.tfstate", "terraform.tfstate.*", "*.tfvars")),
    Rule("Google OAuth client or token", ("client_secret*.json", "client_secrets*",
                                          "token.json", "token_*.json", "token-*.json",
                                          "*token.pickle", "*token.pkl", "mycreds.txt",
                                          "drive-credentials*.json")),
    Rule("package registry credentials", (".netrc", "_netrc", ".npmrc", ".pypirc",
                                          ".yarnrc.yml", ".gem", ".docker", ".cargo"),),
    Rule("ML platform credentials", (".kaggle", "kaggle.json", ".huggingface",
                                     ".comet.config", ".neptune", ".wandb")),
)

#: Look like credentials to the patterns above, but are ordinary files.
NOT_CREDENTIALS = ("tokenizer*", "*.pub", "known_hosts.example")

#: What only key material looks like (looked for in the first SNIFF_BYTES of a file):
#: the marker and a value after it, so code that merely names the marker is not caught.
MARKERS: tuple[tuple[bytes, str], ...] = (
    (rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=]{40}",
     "a private key (found in its content)"),
    (rb'"private_key"\s*:\s*"-----BEGIN', "a service-account key (found in its content)"),
    (rb'"refresh_token"\s*:\s*"[^"]{10,}"', "an OAuth token (found in its content)"),
    (rb'"client_secret"\s*:\s*"[^"]{8,}"', "an OAuth client secret (found in its content)"),
    (rb"aws_secret_access_key\s*=\s*\S{20,}", "AWS credentials (found in its content)"),
)
SNIFF_BYTES = 1 << 20


def glob_match(name: str, pattern: str) -> bool:
    """``fnmatch`` for patterns whose only wildcard is ``*`` (all of orch's), without
    compiling a regex per pattern: submit checks every path against a hundred."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return name == pattern
    first, *middle, last = pieces
    if len(name) < len(first) + len(last) or not name.startswith(first) \
            or not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for piece in middle:
        found = name.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def _matches(part: str, patterns: tuple[str, ...]) -> bool:
    return any(glob_match(part, p) for p in patterns)


def why_by_name(rel: str, extra: frozenset[str] = frozenset(),
                folder: bool = False) -> str | None:
    """Why the project path ``rel`` (posix; a folder with ``folder``) is a credential
    by its name alone, or None. ``extra`` holds project paths configured as
    credentials (orch's own)."""
    if rel in extra:
        return "orch's own credentials (a setting names this file)"
    parts = rel.lower().split("/")
    for i, part in enumerate(parts):
        if _matches(part, NOT_CREDENTIALS):
            continue
        is_folder = folder or i < len(parts) - 1
        for rule in RULES:
            if (not rule.folder or is_folder) and _matches(part, rule.names):
                return rule.what
    return None


@cache
def _compiled() -> tuple[tuple[re.Pattern[bytes], str], ...]:
    return tuple((re.compile(pattern), what) for pattern, what in MARKERS)


def why_by_content(path: Path) -> str | None:
    """Why the file at ``path`` holds key material by its content, or None. Only the
    first ``SNIFF_BYTES`` of a file are read; an unreadable file is not judged."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None
    for marker, what in _compiled():
        if marker.search(head):
            return what
    return None


def why_secret(rel: str, path: Path, extra: frozenset[str] = frozenset()) -> str | None:
    """Why ``rel`` (at ``path``) must never leave the machine, or None if it may."""
    return why_by_name(rel, extra) or why_by_content(path)
