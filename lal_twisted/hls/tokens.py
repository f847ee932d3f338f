"""HLS viewer tokens: who a playlist request belongs to, and what proves it.

An HLS player asks again and again over short requests, so a viewer cannot be
a connection.  lal (with ``hls.sub_session_hash_key``) answers a playlist
request without a ``session_id`` in its query with a 302 to the same URL with
one added, and appends it to the segment URIs of the playlists it serves;
SRS's ``hls_ctx`` is the same idea.  ffmpeg, VLC and hls.js follow the
redirect and keep polling the URL they were sent to.  Here that token is
signed: ``session_id`` is 16 hex digits of a random id and 16 of an
HMAC-SHA256 over the stream name and the id, so

- a viewer is a token, never an address and a User-Agent: everyone behind one
  NAT is a viewer each, and a token is only made by the server;
- a token is checked without looking anything up (a segment request in the
  optional segment check, a token that outlived its session);
- a token is worth what the access checks said when its session was admitted:
  the secret (``lal_secret``) or the hook bought it, and a request with
  neither a valid token nor the secret gets no playlist.

The key is derived from ``simple_auth``'s secrets when they are set (tokens
outlive a restart, and every process of a node shares them), else random at
start.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlencode

__all__ = ["TOKEN_PARAM", "TokenSigner", "token_of", "with_token", "without_token"]

# lal's query parameter name for the HLS session.
TOKEN_PARAM = "session_id"
_ID_HEX = 16
_MAC_HEX = 16


class TokenSigner:
    """Makes and checks viewer tokens for one server."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.key = (hashlib.sha256(b"lal-twisted hls viewer tokens\0" + secret).digest()
                    if secret else secrets.token_bytes(32))

    def make(self, stream: str) -> str:
        viewer = secrets.token_hex(_ID_HEX // 2)
        return viewer + self._mac(stream, viewer)

    def valid(self, stream: str, token: str) -> bool:
        if len(token) != _ID_HEX + _MAC_HEX:
            return False
        viewer, mac = token[:_ID_HEX], token[_ID_HEX:]
        return hmac.compare_digest(mac, self._mac(stream, viewer))

    def _mac(self, stream: str, viewer: str) -> str:
        message = b"%s\0%s" % (stream.encode("utf-8", "surrogatepass"),
                               viewer.encode("ascii", "replace"))
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:_MAC_HEX]


_KEY = TOKEN_PARAM + "="


def token_of(query: str) -> str:
    """The ``session_id`` of a query string ('' when there is none).  Tokens are
    hex, so the value needs no unquoting; read without parsing the whole query
    (every segment request of every player asks)."""
    at = 0 if query.startswith(_KEY) else query.find("&" + _KEY) + 1
    if at == 0 and not query.startswith(_KEY):
        return ""
    start = at + len(_KEY)
    end = query.find("&", start)
    return query[start:] if end < 0 else query[start:end]


def without_token(query: str) -> str:
    """``query`` without its ``session_id`` (other parameters as they were)."""
    if TOKEN_PARAM not in query:
        return query
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != TOKEN_PARAM]
    return "&".join(kept)


def with_token(query: str, token: str) -> str:
    """``query`` with ``session_id=token`` (replacing one it had)."""
    rest = without_token(query)
    added = urlencode({TOKEN_PARAM: token})
    return f"{rest}&{added}" if rest else added
