"""A second pass over a video's tracks: join the fragments of one person's walk [ours].

Motion-only tracking (`partsearch.video.track`) splits a person whenever the detector misses them
for longer than the tracker keeps a track alive: behind a lamp post, crossing someone, a few frames
HOG does not fire. Ingest sees the whole video before it numbers tracks, so it can join such
fragments offline, as the tracklet-association step of offline trackers does (e.g. "GIAOTracker",
Du et al., ICCV 2021 workshops; "StrongSORT"'s AFLink, Du et al., IEEE TMM 2023, on motion alone).

Fragment `a` may continue as fragment `b` when
- `b` starts after `a` ends, within `MAX_GAP_S` seconds;
- `b`'s first box is where a walker could be, with their heights within a factor `MAX_SCALE`: its
  centre within (gap + 0.5 s) x `MAX_SPEED` box heights per second of `a`'s last box centre (a
  walker who slowed, stopped or turned), or within (gap + 0.5 s) x `KEEP_GOING` of where `a`'s
  velocity over its last second would have taken it (a walker who kept going);
- they look alike: the Bhattacharyya distance between the fragments' mean colour histograms
  (`appearance`) is below `MAX_APPEARANCE`;
- `a` did not leave the view [ours]: when `a`'s last box is at a border of the frame, heading out
  through it, and `b`'s first box is at the same border, `a`'s walker went out and `b`'s came in.
  Someone who turns back just outside may be joined later by `reidentify`, which asks for closer
  colours.
Among the allowed pairs, each fragment gets at most one successor and one predecessor, by a
minimum-cost assignment (Hungarian, scipy) on appearance distance plus gap/`MAX_GAP_S`; chains of
pairs are one track.

Before that, `split_handoffs` cuts a fragment where the tracker followed one box from a walker to
another who met them; the two parts are kept apart, and the earlier one is not continued.

`reidentify` then joins the tracks of a person who leaves the view and comes back, by colour alone:
people walk loops through a fixed camera's view, and each return would otherwise be a new track.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

MAX_GAP_S = 4.0
# Box heights per second: about a walker's pace (1.4 m/s for 1.7 m), from where `a` was lost ...
MAX_SPEED = 0.8
# ... or a change of pace or direction, from where `a`'s own velocity leads.
KEEP_GOING = 0.6
VELOCITY_S = 1.0  # `a`'s velocity: a least-squares line through its box centres of its last second
MAX_SCALE = 1.5
MAX_APPEARANCE = 0.45
# A box is at a border of the frame when it is within this many of its widths of it (HOG's boxes
# pad the person, and a person half out of view is missed), and a walk heads out through it at
# this many box heights per second or more.
AT_BORDER = 0.5
HEADING_OUT = 0.1
HIST_BINS = (8, 4, 4)  # hue, saturation, value
# Re-identification across any gap (`reidentify`): tracks with at least this many boxes, joined
# while all their mean signatures are closer than this.
REID_MIN_BOXES = 15
REID_MAX_APPEARANCE = 0.35
# ... and only within this many seconds of one another: a return into view, not a look-alike hours
# later (that is what a sightings search and a person's decision are for, docs/SEARCH.md).
REID_MAX_GAP_S = 120.0
# A fragment that takes over another walker (`split_handoffs`): at least this many boxes either side
# of the cut, and its later boxes this much closer in colour to the walker lost there than to its
# own earlier boxes.
HANDOFF_MIN_BOXES = 5
HANDOFF_MARGIN = 0.1


def appearance(crop_bgr: np.ndarray) -> np.ndarray:
    """A crop's colour signature: HSV histograms of its upper and lower halves (clothes), each the
    middle half of the width (less background), concatenated and L1-normalised per half."""
    import cv2

    h, w = crop_bgr.shape[:2]
    core = crop_bgr[:, w // 4: max(w // 4 + 1, w - w // 4)]
    hsv = cv2.cvtColor(np.ascontiguousarray(core), cv2.COLOR_BGR2HSV)
    halves = []
    for part in (hsv[: max(1, h // 2)], hsv[h // 2:] if h > 1 else hsv):
        hist = cv2.calcHist([part], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        halves.append(hist / max(hist.sum(), 1e-9))
    return np.concatenate(halves).astype(np.float32)


def bhattacharyya(a: np.ndarray, b: np.ndarray) -> float:
    """Distance in [0, 1] between two signatures of `appearance` (0: the same histograms): from the
    mean of the two halves' Bhattacharyya coefficients (each half sums to 1). The tracker calls it
    for every detection and track, so it stays one product and one sum."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(a * b).sum()) / 2)))


def bhattacharyya_to_all(a: np.ndarray, others: np.ndarray) -> np.ndarray:
    """`bhattacharyya(a, o)` for every row `o` of `others` `(n, len(a))`: the mean over the two
    halves of their Bhattacharyya coefficients, as one product with the square roots."""
    coefficient = (np.sqrt(np.asarray(others, np.float64)) @ np.sqrt(np.asarray(a, np.float64))) / 2
    return np.sqrt(np.clip(1.0 - coefficient, 0.0, None))


@dataclass
class Fragment:
    """One track before stitching: times (s) and boxes (x1, y1, x2, y2) in order, and the
    appearance signatures of its boxes."""

    key: int
    times: list[float] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    signatures: list[np.ndarray] = field(default_factory=list)

    def add(self, time: float, box: tuple[int, int, int, int], signature: np.ndarray) -> None:
        self.times.append(time)
        self.boxes.append(box)
        self.signatures.append(signature)

    def signature(self) -> np.ndarray:
        return np.mean(self.signatures, axis=0)

    @classmethod
    def joined(cls, key: int, parts: list["Fragment"]) -> "Fragment":
        """One fragment of `parts`' boxes in time order (a stitched walk), keyed `key`."""
        walk = cls(key)
        for part in sorted(parts, key=lambda f: f.times[0]):
            walk.times += part.times
            walk.boxes += part.boxes
            walk.signatures += part.signatures
        return walk


def _centre_height(box) -> tuple[float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2, float(y2 - y1)


def _velocity(fragment: Fragment) -> tuple[float, float]:
    """Pixels per second of the fragment's box centre over its last `VELOCITY_S` (0 with fewer than
    3 boxes there)."""
    times = np.asarray(fragment.times)
    last = times >= times[-1] - VELOCITY_S
    if last.sum() < 3:
        return 0.0, 0.0
    centres = np.array([_centre_height(box)[:2] for box, keep in zip(fragment.boxes, last) if keep])
    slope = np.polyfit(times[last], centres, 1)[0]
    return float(slope[0]), float(slope[1])


def _left_view(a: Fragment, box, frame: tuple[int, int], velocity: tuple[float, float] | None = None) -> bool:
    """Whether `a` ends at a border of a `frame` (width, height) heading out through it and `box`
    is at the same border (`velocity`: `_velocity(a)`, when the caller has it)."""
    width, height = frame
    vx, vy = np.array(_velocity(a) if velocity is None else velocity) / max(1.0, _centre_height(a.boxes[-1])[2])

    def borders(box) -> tuple[bool, bool, bool, bool]:  # left, right, top, bottom
        x1, y1, x2, y2 = box
        margin = AT_BORDER * (x2 - x1)
        return x1 <= margin, x2 >= width - margin, y1 <= margin, y2 >= height - margin

    heading_out = (vx <= -HEADING_OUT, vx >= HEADING_OUT, vy <= -HEADING_OUT, vy >= HEADING_OUT)
    return any(x and y and z for x, y, z in zip(borders(a.boxes[-1]), heading_out, borders(box)))


def _reachable(a: Fragment, box, gap: float, velocity: tuple[float, float] | None = None) -> bool:
    """Whether `a`'s walker, lost `gap` seconds ago, could be in `box`: a height within `MAX_SCALE`,
    and near where they were lost or where their pace leads (`velocity`: `_velocity(a)`, when the
    caller has it)."""
    ax, ay, ah = _centre_height(a.boxes[-1])
    bx, by, bh = _centre_height(box)
    if max(ah, bh) > MAX_SCALE * max(1.0, min(ah, bh)):
        return False
    height = (ah + bh) / 2
    if np.hypot(bx - ax, by - ay) <= (gap + 0.5) * MAX_SPEED * height:
        return True
    vx, vy = _velocity(a) if velocity is None else velocity
    return bool(np.hypot(bx - ax - vx * gap, by - ay - vy * gap) <= (gap + 0.5) * KEEP_GOING * height)


def link_cost(a: Fragment, b: Fragment, frame: tuple[int, int] | None = None) -> float | None:
    """The cost of `b` continuing `a`, or None when it may not; `frame` (width, height) is the
    frame's size, when known."""
    gap = b.times[0] - a.times[-1]
    if not 0 < gap <= MAX_GAP_S or not _reachable(a, b.boxes[0], gap):
        return None
    distance = bhattacharyya(a.signature(), b.signature())
    if distance >= MAX_APPEARANCE or (frame is not None and _left_view(a, b.boxes[0], frame)):
        return None
    return distance + gap / MAX_GAP_S


def handoff(b: Fragment, fragments: list[Fragment], frame: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Where `b` takes over another walker [ours]: (the index of `b`'s first box that is theirs, the
    key of their fragment), or None.

    Two people meet, HOG finds one box where both stand, and the tracker follows that box from one
    of them to the other; the first walks on undetected, and the second's own fragment ends there.
    `b` is cut before box k when a fragment `a` of `HANDOFF_MIN_BOXES` boxes or more ended while `b`
    was in view, `b`'s box k is where `a`'s walker could be (`link_cost`'s rules of position, scale
    and border) at most `MAX_GAP_S` later, and `b`'s boxes from k on are closer in colour to `a`
    than to `b`'s boxes before k by `HANDOFF_MARGIN` or more, and closer than `MAX_APPEARANCE`. Of
    several such cuts, the one whose colours differ most. On vtest.avi it finds the one handshake
    where a track passed from a man in a leather jacket to one in a brown jacket and jeans, in the
    default boxes and in 8 sets with 5% of them dropped, and no other cut (docs/VIDEO.md)."""
    n = len(b.times)
    if n < 2 * HANDOFF_MIN_BOXES:
        return None
    sums = np.cumsum(np.asarray(b.signatures, np.float64), axis=0)
    best: tuple[float, int, int] | None = None
    for a in fragments:
        lost = a.times[-1]
        if a is b or len(a.times) < HANDOFF_MIN_BOXES or not b.times[0] <= lost < b.times[n - HANDOFF_MIN_BOXES]:
            continue
        theirs, velocity = a.signature(), _velocity(a)
        for k in range(HANDOFF_MIN_BOXES, n - HANDOFF_MIN_BOXES + 1):
            gap = b.times[k] - lost
            if gap > MAX_GAP_S:
                break
            if gap <= 0 or not _reachable(a, b.boxes[k], gap, velocity):
                continue
            before, after = sums[k - 1] / k, (sums[-1] - sums[k - 1]) / (n - k)
            to_them, to_own = bhattacharyya(theirs, after), bhattacharyya(before, after)
            if (to_them >= MAX_APPEARANCE or to_them + HANDOFF_MARGIN > to_own
                    or (best is not None and to_own - to_them <= best[0])
                    or (frame is not None and _left_view(a, b.boxes[k], frame, velocity))):
                continue
            best = (to_own - to_them, k, a.key)
    return None if best is None else (best[1], best[2])


def split_handoffs(fragments: list[Fragment], next_key: int,
                   frame: tuple[int, int] | None = None) -> tuple[list[Fragment], dict[int, tuple[float, int]]]:
    """`fragments` with each that took over another walker (`handoff`) cut in two, the later part
    keyed `next_key`, `next_key + 1`, ...; and the key of each fragment cut -> (the time of its later
    part's first box, that part's key). The two parts are two people: `stitch` does not continue the
    earlier part (`last`), and `reidentify` takes the pair as `apart`."""
    out: list[Fragment] = []
    cuts: dict[int, tuple[float, int]] = {}
    by_end = sorted(fragments, key=lambda f: f.times[-1])
    ends = [f.times[-1] for f in by_end]
    for b in fragments:
        lost_during = by_end[bisect.bisect_left(ends, b.times[0]):bisect.bisect_left(ends, b.times[-1])]
        found = handoff(b, lost_during, frame)
        if found is None:
            out.append(b)
            continue
        k = found[0]
        out.append(Fragment(b.key, b.times[:k], b.boxes[:k], b.signatures[:k]))
        out.append(Fragment(next_key, b.times[k:], b.boxes[k:], b.signatures[k:]))
        cuts[b.key] = (b.times[k], next_key)
        next_key += 1
    return out, cuts


def stitch(fragments: list[Fragment], frame: tuple[int, int] | None = None,
           last: Collection[int] = ()) -> dict[int, int]:
    """Fragment key -> the key of the first fragment of its chain (itself when not joined);
    `frame` is the frames' (width, height), when known (`link_cost`); the fragments keyed in `last`
    are not continued: the earlier part of a track `split_handoffs` cut ends where its walker was
    hidden by the one who took their place, and the next fragment to begin there within seconds,
    its own later part included, is as likely another of the people who met (their return is left
    to `reidentify`)."""
    from scipy.optimize import linear_sum_assignment

    n = len(fragments)
    root = {f.key: f.key for f in fragments}
    if n < 2:
        return root
    big = 1e6
    ended = set(last)
    cost = np.full((n, n), big)
    for i, a in enumerate(fragments):
        for j, b in enumerate(fragments):
            if i != j and a.key not in ended and (c := link_cost(a, b, frame)) is not None:
                cost[i, j] = c
    rows, cols = linear_sum_assignment(cost)
    successor = {fragments[i].key: fragments[j].key for i, j in zip(rows, cols) if cost[i, j] < big}
    predecessor = {b: a for a, b in successor.items()}
    for f in fragments:
        if f.key in predecessor:
            continue
        key = f.key
        while key in successor:
            key = successor[key]
            root[key] = f.key
    return root


def reidentify(tracks: list[Fragment], apart: Collection[tuple[int, int]] = ()) -> dict[int, int]:
    """Track key -> the key of the first track of its person [ours], for tracks already stitched
    (one `Fragment` each, all their boxes in order).

    Agglomerative clustering with complete linkage, closest first: two groups of tracks are joined
    while every track of one is closer than `REID_MAX_APPEARANCE` to every track of the other (the
    distance of their mean colour signatures), no track of one is in view while a track of the
    other is (one person is never in two places), and some track of one ends within
    `REID_MAX_GAP_S` of where one of the other begins. Complete linkage keeps a group from drifting
    through a chain of look-alikes. Tracks with fewer than `REID_MIN_BOXES` boxes are left alone:
    their signature is too noisy to tell people apart. On vtest.avi the joins this makes are
    between passes of one person, IDF1 0.53 -> 0.82 (docs/VIDEO.md). People in alike clothes who
    are never in view together may be joined; the pairs of keys in `apart` never are."""
    root = {t.key: t.key for t in tracks}
    groups = [t for t in tracks if len(t.times) >= REID_MIN_BOXES]
    n = len(groups)
    if n < 2:
        return root
    signatures = np.array([np.mean(t.signatures, axis=0) for t in groups], np.float64)
    linkage = np.array([bhattacharyya_to_all(sig, signatures) for sig in signatures])
    start = np.array([t.times[0] for t in groups])
    end = np.array([t.times[-1] for t in groups])
    disjoint = (start[:, None] > end[None, :]) | (start[None, :] > end[:, None])  # never in view together
    index = {t.key: i for i, t in enumerate(groups)}
    for x, y in apart:
        if x in index and y in index:
            disjoint[index[x], index[y]] = disjoint[index[y], index[x]] = False
    gap = np.maximum(start[:, None] - end[None, :], start[None, :] - end[:, None])
    near = gap <= REID_MAX_GAP_S
    joinable = np.where(disjoint & near, linkage, np.inf)
    alive = np.ones(n, bool)
    members = [[t.key] for t in groups]
    while True:
        i, j = sorted(np.unravel_index(np.argmin(joinable), joinable.shape))
        if joinable[i, j] >= REID_MAX_APPEARANCE:
            break
        members[i] += members[j]
        alive[j] = False
        linkage[i] = linkage[:, i] = np.maximum(linkage[i], linkage[j])
        disjoint[i] = disjoint[:, i] = disjoint[i] & disjoint[j]
        near[i] = near[:, i] = near[i] | near[j]
        joinable[j] = joinable[:, j] = np.inf
        joinable[i] = joinable[:, i] = np.where(disjoint[i] & near[i] & alive, linkage[i], np.inf)
    first_seen = {t.key: t.times[0] for t in groups}
    for keys in (members[i] for i in np.flatnonzero(alive)):
        first = min(keys, key=first_seen.__getitem__)
        for k in keys:
            root[k] = first
    return root
