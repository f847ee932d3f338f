"""HTTP-TS: live MPEG-TS over one chunked HTTP response (``/APP/STREAM.ts``)."""
