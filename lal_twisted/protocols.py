"""The names of the protocols a session speaks, in one place.

A session's ``protocol`` is one of :class:`ProtocolName`; its value is the name
the server shows for it (the ``protocol`` label of the metrics, the session
stats, logs) and the key of simple_auth's switches.  ``lal_name`` is the name
lal's HTTP API and HTTP notify give it (``StatSession.protocol``): a backend
written for lal reads those strings, so neither spelling may change.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ProtocolName", "lal_protocol_name"]


class ProtocolName(StrEnum):
    """A protocol of a session (a publisher's, a player's or a relay's)."""

    RTMP = "rtmp"  # and RTMPS: the same sessions over TLS
    HTTP_FLV = "httpflv"  # and WebSocket-FLV players, as lal counts them
    WS_FLV = "wsflv"  # the WebSocket-FLV connection of an HTTP_FLV session (logs)
    HTTP_TS = "httpts"
    HLS = "hls"
    RTSP = "rtsp"  # lal's simple_auth has switches for it

    @property
    def lal_name(self) -> str:
        """lal's name of the protocol in the API and notify."""
        return _LAL_NAMES[self]


_LAL_NAMES = {
    ProtocolName.RTMP: "RTMP",
    ProtocolName.HTTP_FLV: "FLV",
    ProtocolName.WS_FLV: "FLV",
    ProtocolName.HTTP_TS: "TS",
    ProtocolName.HLS: "HLS",
    ProtocolName.RTSP: "RTSP",
}


def lal_protocol_name(protocol: str) -> str:
    """lal's name of ``protocol``; a protocol this server does not name (an
    application's own sessions) in capitals."""
    try:
        return ProtocolName(protocol).lal_name
    except ValueError:
        return protocol.upper()
