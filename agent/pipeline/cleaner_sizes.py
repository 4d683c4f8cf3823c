"""The ``remove_unlisted_sizes`` rule: thumbnails of sizes taken out of ``thumbnails.sizes``.

With several sizes each has its own top folder (``256/trip/a.jpg``); with one there is none
(``trip/a.jpg``). So after a change to ``sizes`` two kinds of thumbnails are left over: those in
the folder of a size no longer listed, and, after going from one size to several, those of the
single-size layout. A thumbnail is selected only when

* the thumbnails of its image at every current size exist (nothing is left without a thumbnail),
* and, in the bucket, its own ``source-key`` metadata names a source whose current thumbnails are
  at other keys (so a source folder that happens to be called ``1024`` is never mistaken for a size);
* or, locally (no metadata there), its bucket copy was selected by the rule above, or the current
  layout cannot produce its path at all (several sizes now, and it is in no size folder) and no
  source in the bucket could have made it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from agent.config.model import Config
from agent.pipeline.cleaner import LOCAL, Deletion, Snapshot, source_rels_of
from agent.pipeline.keys import Layout


def _single(layout: Layout) -> Layout:
    """The same names with one size: thumbnail paths without a size folder."""
    return dataclasses.replace(layout, sizes=(layout.sizes[0],))


def _current_folders(layout: Layout) -> set[str]:
    return {str(s) for s in layout.sizes} if len(layout.sizes) > 1 else set()


def old_forms(layout: Layout, rel: str) -> list[tuple[str, str]]:
    """(path without a size folder, why it is left over) for each old layout ``rel`` could belong to."""
    head, _, rest = rel.partition("/")
    folders = _current_folders(layout)
    out: list[tuple[str, str]] = []
    if rest and head.isdigit() and str(int(head)) == head and head not in folders:
        out.append((rest, f"thumbnail of size {head}, no longer in thumbnails.sizes"))
    if len(layout.sizes) > 1 and head not in folders:
        out.append((rel, "thumbnail of the single-size layout (thumbnails.sizes now lists several)"))
    return out


def current_paths(layout: Layout, plain: str) -> list[str]:
    """Where the current sizes of the image whose thumbnail path (without a size folder) is ``plain`` live."""
    return [f"{s}/{plain}" for s in layout.sizes] if len(layout.sizes) > 1 else [plain]


def select_unlisted_sizes(cfg: Config, snap: Snapshot, recorded_source: Callable[[str], str | None]) -> list[Deletion]:
    """Thumbnail bucket objects of sizes (or a layout) no longer configured, proven by their own metadata."""
    layout = Layout.of(cfg)
    single = _single(layout)
    out: list[Deletion] = []
    for key, obj in snap.thumbs.items():
        rel = layout.rel_of_thumb_key(key)
        if rel is None:
            continue
        for plain, why in old_forms(layout, rel):
            if not all(layout.thumb_prefix + p in snap.thumbs for p in current_paths(layout, plain)):
                continue
            recorded = recorded_source(key)
            srel = layout.rel_of_source_key(recorded) if recorded else None
            if srel is None or key in layout.thumb_keys(srel) or single.thumb_rel(srel, layout.sizes[0]) != plain:
                continue
            out.append(Deletion(cfg.thumbnails.bucket, key, why, obj.size))
            break
    return out


def select_unlisted_sizes_local(cfg: Config, snap: Snapshot, remote: list[Deletion]) -> list[Deletion]:
    """Local copies of those thumbnails, and local-only ones the current layout cannot have made."""
    layout = Layout.of(cfg)
    root = Path(cfg.local.thumbnails_dir)
    chosen = {d.key: d.reason for d in remote if d.bucket == cfg.thumbnails.bucket}
    out: list[Deletion] = []
    for rel, stat in sorted(snap.local_thumbs.items()):
        why = chosen.get(layout.thumb_prefix + rel)
        if why is None and layout.thumb_prefix + rel not in snap.thumbs:
            why = _left_over_locally(layout, snap, rel)
        if why is not None:
            out.append(Deletion(LOCAL, str(root.joinpath(*rel.split("/"))), f"local {why}", stat.size))
    return out


def _left_over_locally(layout: Layout, snap: Snapshot, rel: str) -> str | None:
    """Why a local thumbnail with no bucket copy is left over from other sizes, or None."""
    if len(layout.sizes) == 1 and any(layout.source_key(s) in snap.source for s in source_rels_of(layout, rel)):
        return None  # one size: it is also the current thumbnail of a source in a folder named like a size
    for plain, why in old_forms(layout, rel):
        if all(p in snap.local_thumbs for p in current_paths(layout, plain)) and any(
            layout.source_key(s) in snap.source for s in source_rels_of(_single(layout), plain)
        ):
            return why
    return None
