"""Recording every publish to FLV and MPEG-TS files (``record.*`` config keys)."""
