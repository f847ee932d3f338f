"""Stream-owned outputs: per-stream encoders a Stream makes on first use, feeds
in stream order and closes with it (:class:`~lal_twisted.hub.ports.IStreamOutput`)."""
