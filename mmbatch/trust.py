"""The input trust boundary, and URIs with their secrets taken out.

Only what the night was given is read. Every URI the job is about to read — manifest rows,
HLS segments, sidecars — is resolved and checked against the run's allowed roots: by default
the input's own folder or prefix, on its own scheme; more only when listed in
`inputs.allowed_roots`. `http(s)://` is refused unless a root of that scheme is listed. A URI
outside is a per-video error naming the rule; nothing is read from it.

Credentials never reach logs, Parquet, manifests or error messages: `redact_uri` drops the
password of `user:password@` and the values of query parameters that carry signatures or
tokens (presigned S3, GCS and Azure SAS URLs).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

# Query parameters whose values are secrets: AWS SigV4 (X-Amz-Signature, -Credential,
# -Security-Token), GCS (X-Goog-Signature, Signature), Azure SAS (sig), and generic ones.
_SECRET_WORDS = ("signature", "token", "credential", "secret", "password", "passwd", "apikey", "api_key")
_SECRET_NAMES = {"sig", "key", "auth", "policy", "access_token", "code"}


def _is_secret_param(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_NAMES or low.split("-")[-1] in _SECRET_NAMES or any(w in low for w in _SECRET_WORDS)
_URI_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


class TrustError(Exception):
    """A URI outside the run's allowed roots; the message names the rule."""


def redact_uri(uri: str) -> str:
    """The URI without a password in its authority and without secret query values."""
    if "::" in uri:  # chained fsspec URL (tar://member::s3://bucket/shard.tar)
        return "::".join(redact_uri(part) for part in uri.split("::"))
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri.split("?", 1)[0]
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    pairs = [p.split("=", 1) for p in parts.query.split("&")] if parts.query else []
    query = "&".join(f"{p[0]}=***" if len(p) == 2 and _is_secret_param(unquote(p[0])) else "=".join(p) for p in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URI inside a message, redacted."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def _normalise(uri: str, *, strict: bool = False) -> tuple[str, str | None]:
    """(scheme, normalised path) of a URI or local path, the way its filesystem will read it;
    `..` cannot climb out of a root.

    - Local paths: POSIX normalisation (`a/../b` is `b`, `//` is `/`), as the kernel resolves them.
    - http(s): the host without user-info, lower case; the path percent-decoded and normalised,
      as servers do (`%2e%2e` is `..`).
    - Object stores: keys are literal strings. With `strict` (a URI about to be read), a key
      with empty, `.` or `..` segments is ambiguous (clients and proxies disagree on it): the
      path is None and the URI is refused. Roots are normalised leniently.
    """
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        return "file", posixpath.normpath(uri) if uri else "/"
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    authority, _, path = rest.split("?", 1)[0].split("#", 1)[0].partition("/")
    if scheme in ("http", "https"):
        host = authority.rsplit("@", 1)[-1].lower()
        return scheme, posixpath.normpath("/" + host + "/" + unquote(path))
    segments = path.split("/")
    if strict and (any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", "..")):
        return scheme, None
    return scheme, posixpath.normpath("/" + authority + "/" + path)


@dataclass(frozen=True)
class AllowedRoots:
    roots: tuple[tuple[str, str], ...]  # (scheme, normalised path prefix)

    @classmethod
    def for_input(cls, input_uri: str, extra: list[str] | tuple[str, ...] = ()) -> AllowedRoots:
        """The input's own folder or prefix (a file's or manifest's folder), plus `extra`."""
        scheme, path = _normalise(input_uri)
        if any(ch in path for ch in "*?["):
            path = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0] or "/"
        elif posixpath.splitext(path)[1]:  # a single video, manifest, shard or playlist
            path = posixpath.dirname(path)
        return cls(((scheme, path),) + tuple(_normalise(r) for r in extra))

    def describe(self) -> str:
        return ", ".join(f"{s}://{p}" if s != "file" else p for s, p in self.roots)

    def check(self, uri: str) -> None:
        """Raise TrustError unless `uri` lies under an allowed root."""
        inner = uri.rsplit("::", 1)[-1]  # a tar member is as trusted as its shard
        scheme, path = _normalise(inner, strict=True)
        for root_scheme, root in self.roots:
            if path is not None and scheme == root_scheme and (path == root or path.startswith(root.rstrip("/") + "/")):
                return
        if scheme in ("http", "https"):
            raise TrustError(f"refused {redact_uri(uri)}: http(s) inputs are not allowed "
                             f"unless listed in inputs.allowed_roots")
        raise TrustError(f"refused {redact_uri(uri)}: outside the allowed input roots ({self.describe()}); "
                         f"list it in inputs.allowed_roots to allow it")

    def allows(self, uri: str) -> bool:
        try:
            self.check(uri)
        except TrustError:
            return False
        return True
