"""The in-memory HLS store: segments in memfds once served, sent with sendfile, bounded."""

from __future__ import annotations

import os

from lal_twisted.hls.store import MemoryStore, Pieces
from lal_twisted.net import FileSpan


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_segments_are_kept_in_memfds_and_read_back_whole() -> None:
    store = MemoryStore()
    data = bytes(range(256)) * 600
    store.put("s/s-1-0.ts", data)
    kept = store.span("s/s-1-0.ts")
    assert isinstance(kept, FileSpan) and len(kept) == len(data)
    assert store.read("s/s-1-0.ts") == data
    assert os.readlink(f"/proc/self/fd/{kept.fd}").startswith("/memfd:")
    got: list[bytes | None] = []
    store.get("s/s-1-0.ts").addCallback(got.append)
    assert got == [data]
    assert store.read("s/none.ts") is None and store.span("s/none.ts") is None
    store.close()


def test_descriptors_are_closed_on_delete_eviction_replace_and_close() -> None:
    before = _open_fds()
    store = MemoryStore(max_bytes=3000)
    for i in range(3):
        store.put(f"a/{i}.ts", bytes([i]) * 1000)
    assert store.fds == 0 and _open_fds() == before  # none served yet: no memfd
    for i in range(3):
        assert isinstance(store.span(f"a/{i}.ts"), FileSpan)
    assert store.fds == 3 and _open_fds() == before + 3
    assert list(store.files) == ["a/0.ts", "a/1.ts", "a/2.ts"]  # the order stays
    store.put("a/3.ts", b"x" * 1000)      # over the bound: the oldest goes
    assert store.read("a/0.ts") is None and store.bytes == 3000
    assert store.fds == 2 and _open_fds() == before + 2
    store.span("a/3.ts")
    assert store.fds == 3 and _open_fds() == before + 3
    store.put("a/3.ts", b"y" * 500)       # replaced: the old memfd is closed
    assert store.read("a/3.ts") == b"y" * 500 and store.bytes == 2500
    assert store.fds == 2 and _open_fds() == before + 2
    store.delete("a/1.ts")
    assert store.fds == 1 and _open_fds() == before + 1
    store.put("b/0.ts", b"z" * 10)
    store.delete_dir("a")
    assert list(store.files) == ["b/0.ts"] and store.bytes == 10
    store.close()
    assert store.fds == 0 and store.bytes == 0 and _open_fds() == before


def test_past_its_descriptor_share_the_store_keeps_bytes() -> None:
    store = MemoryStore(max_fds=2)
    for i in range(4):
        store.put(f"c/{i}.ts", bytes([i]) * 100)
    kinds = [type(store.span(f"c/{i}.ts")) for i in range(4)]
    assert kinds == [FileSpan, FileSpan, bytes, bytes]
    assert [store.read(f"c/{i}.ts") for i in range(4)] == [bytes([i]) * 100 for i in range(4)]
    store.delete("c/0.ts")
    store.put("c/4.ts", b"4" * 100)       # a descriptor is free again
    assert isinstance(store.span("c/4.ts"), FileSpan)
    store.close()


def test_a_segment_in_pieces_is_served_as_their_bytes() -> None:
    """A segment is stored as the TS pieces it was made of: it counts its size,
    goes into a memfd whole on first serve (more pieces than one writev takes,
    some empty), and is joined once for a plain read."""
    parts = [bytes([i % 251]) * (i % 200) for i in range(2500)]
    whole = b"".join(parts)
    store = MemoryStore()
    store.put("s/a.ts", Pieces(parts))
    store.put("s/b.ts", Pieces(list(parts)))
    assert store.bytes == 2 * len(whole)
    kept = store.span("s/a.ts")
    assert isinstance(kept, FileSpan) and len(kept) == len(whole)
    assert kept.read() == whole and store.read("s/a.ts") == whole
    assert store.read("s/b.ts") == whole and type(store.files["s/b.ts"]) is bytes
    assert list(store.files) == ["s/a.ts", "s/b.ts"] and store.bytes == 2 * len(whole)
    store.close()
    assert store.bytes == 0 and store.fds == 0
    full = MemoryStore(max_fds=0)  # no descriptor to spare: joined into bytes
    full.put("s/c.ts", Pieces(parts))
    assert full.span("s/c.ts") == whole
    full.close()
