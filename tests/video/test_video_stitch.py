"""Joining the fragments of one person's walk by motion and colour (`partsearch.video.stitch`),
cutting a track where it passed from one person to another (`split_handoffs`), re-identifying a person who comes back into view (`reidentify`), and the tracker that feeds them
(`PersonTracker.track_ids`)."""

import numpy as np
import pytest

from partsearch.video.detect import PersonBox
from partsearch.video.stitch import (MAX_GAP_S, REID_MAX_APPEARANCE, REID_MAX_GAP_S, REID_MIN_BOXES, Fragment,
                                     appearance, bhattacharyya, bhattacharyya_to_all, link_cost, reidentify,
                                     split_handoffs, stitch)
from partsearch.video.track import PersonTracker

RED, BLUE, GREEN = (40, 40, 200), (200, 60, 30), (40, 160, 40)  # BGR


def _crop(top, bottom=None, size=(80, 30)):
    crop = np.zeros((*size, 3), np.uint8)
    crop[: size[0] // 2] = top
    crop[size[0] // 2:] = bottom if bottom is not None else top
    return crop


def _fragment(key, start, end, x0, colour, fps=5.0, speed=20.0):
    """A walker 80 px tall moving right at `speed` px/s from `start` to `end` seconds."""
    frag = Fragment(key)
    for t in np.arange(start, end + 1e-9, 1 / fps):
        x = int(x0 + speed * t)
        frag.add(float(t), (x, 100, x + 30, 180), appearance(_crop(*colour)))
    return frag


def test_the_same_clothes_are_close_and_other_clothes_far():
    assert bhattacharyya(appearance(_crop(RED, BLUE)), appearance(_crop(RED, BLUE))) < 0.05
    assert bhattacharyya(appearance(_crop(RED, BLUE)), appearance(_crop(BLUE, RED))) > 0.9


def test_a_walk_split_by_a_short_gap_is_joined():
    a, b = _fragment(1, 0, 2, 0, (RED, BLUE)), _fragment(2, 3.5, 6, 0, (RED, BLUE))
    assert stitch([a, b]) == {1: 1, 2: 1}


def test_fragments_in_other_clothes_stay_apart():
    a, b = _fragment(1, 0, 2, 0, (RED, BLUE)), _fragment(2, 3.5, 6, 0, (GREEN, GREEN))
    assert stitch([a, b]) == {1: 1, 2: 2}


def test_fragments_too_far_apart_in_time_or_space_or_overlapping_stay_apart():
    a = _fragment(1, 0, 2, 0, (RED, BLUE))
    late = _fragment(2, 2 + MAX_GAP_S + 0.5, 9, 0, (RED, BLUE))
    far = _fragment(3, 2.5, 4, 600, (RED, BLUE))
    overlapping = _fragment(4, 1.0, 4, 0, (RED, BLUE))
    for other in (late, far, overlapping):
        assert stitch([a, other])[other.key] == other.key


def test_a_walker_who_kept_going_while_lost_is_joined_beyond_where_a_stop_would_reach():
    a = _fragment(1, 0, 2, 0, (RED, BLUE), speed=96)  # 1.2 box heights a second
    b = _fragment(2, 5, 7, 0, (RED, BLUE), speed=96)  # lost for 3 s, found where the pace leads: 288 px on
    assert stitch([a, b]) == {1: 1, 2: 1}


def test_a_fragment_as_far_back_as_the_walker_went_on_is_not_their_continuation():
    # As far from where the walker was lost as above (288 px), but behind them: on vtest.avi a man
    # lost at the sign was joined to another coming in at the frame's edge.
    a = _fragment(1, 0, 2, 300, (RED, BLUE), speed=96)
    b = _fragment(2, 5, 7, 300 + 192 - 288 - 480, (RED, BLUE), speed=96)
    assert b.boxes[0][0] == a.boxes[-1][0] - 288
    assert stitch([a, b]) == {1: 1, 2: 2}


def test_each_fragment_continues_into_at_most_one_the_closest_in_look():
    a = _fragment(1, 0, 2, 0, (RED, BLUE))
    near_look = _fragment(2, 3.0, 5, 0, (RED, BLUE))
    other_look = _fragment(3, 3.0, 5, 10, (RED, BLUE))
    mixed = 0.8 * appearance(_crop(RED, BLUE)) + 0.2 * appearance(_crop(GREEN, GREEN))
    other_look.signatures = [mixed] * len(other_look.times)
    assert link_cost(a, other_look) is not None  # allowed on its own, but a worse match
    roots = stitch([a, near_look, other_look])
    assert roots[2] == 1 and roots[3] == 3


def _leaving_and_entering():
    """A walker who goes out of a 300 px wide frame at its right border, heading right, and one
    in the same clothes who comes in there 1 s later, heading left."""
    a = _fragment(1, 0, 2, 230, (RED, BLUE))  # last box 270-300
    b = _fragment(2, 3, 5, 328, (RED, BLUE), speed=-20)  # first box 268-298
    return [a, b]


def test_a_walker_who_left_the_view_does_not_continue_as_one_coming_in_where_they_left():
    # vtest.avi: a man in a leather jacket leaves at the right edge, and 2 s later a man in a long
    # black coat comes in at the same spot; stitching made them one track.
    assert stitch(_leaving_and_entering(), frame=(300, 400)) == {1: 1, 2: 2}


def test_a_walker_as_tall_as_the_frame_drifting_down_a_little_is_joined_across_a_gap():
    # The synthetic street's figures fill half the frame's height: their boxes touch the bottom
    # border, and HOG's boxes wobble down a few pixels a second as they walk sideways.
    a, b = _fragment(1, 0, 2, 0, (RED, BLUE)), _fragment(2, 3, 5, 0, (RED, BLUE))
    for fragment in (a, b):
        fragment.boxes = [(x1, y1 + int(4 * t), x2, y2 + int(4 * t))
                          for t, (x1, y1, x2, y2) in zip(fragment.times, fragment.boxes)]
    assert stitch([a, b], frame=(400, 190)) == {1: 1, 2: 1}


def test_the_same_walks_away_from_the_border_are_joined():
    assert stitch(_leaving_and_entering(), frame=(600, 400)) == {1: 1, 2: 1}
    assert stitch(_leaving_and_entering()) == {1: 1, 2: 1}  # frame size unknown


def _frame(boxes_colours, size=(300, 400)):
    image = np.full((*size, 3), 128, np.uint8)
    for (x1, y1, x2, y2), (top, bottom) in boxes_colours:
        image[y1:(y1 + y2) // 2, x1:x2] = top
        image[(y1 + y2) // 2:y2, x1:x2] = bottom
    return image


def test_the_tracker_gives_a_person_missed_for_two_seconds_one_track_when_stitching():
    fps, tracker = 5.0, PersonTracker(5.0)
    keys = []
    for n in range(40):
        t = n / fps
        if 3.0 <= t < 5.0:  # the detector misses the walker for 2 s, longer than a track lives
            tracker.update([], _frame([]), t)
            continue
        x = int(20 + 8 * n)
        box = PersonBox(x, 100, x + 30, 180, 1.0)
        keys += tracker.update([box], _frame([(box.xyxy, (RED, BLUE))]), t)
    assert len(set(tracker.track_ids().values())) == 2
    assert set(tracker.track_ids(stitch_fragments=True).values()) == {1}


def test_the_tracker_keeps_apart_a_walker_who_left_at_the_border_and_one_who_came_in_there():
    fps, tracker = 5.0, PersonTracker(5.0)  # frames 400 px wide
    for n in range(40):
        t = n / fps
        if t < 3.0:
            x = int(254 + 40 * t)  # out at the right border: the last box ends at 396
        elif t >= 5.0:
            x = int(368 - 40 * (t - 5.0))  # in at the same border 2 s later: the first ends at 398
        else:
            tracker.update([], _frame([]), t)
            continue
        box = PersonBox(x, 100, x + 30, 180, 1.0)
        tracker.update([box], _frame([(box.xyxy, (RED, BLUE))]), t)
    assert len(set(tracker.track_ids(stitch_fragments=True).values())) == 2


def test_the_distance_to_all_rows_is_the_distance_to_each():
    signatures = np.stack([appearance(_crop(RED, BLUE)), appearance(_crop(GREEN, RED)), appearance(_crop(BLUE))])
    mixed = 0.6 * signatures[0] + 0.4 * signatures[1]
    assert np.allclose(bhattacharyya_to_all(mixed, signatures), [bhattacharyya(mixed, s) for s in signatures])


def test_a_person_who_comes_back_in_the_same_clothes_keeps_one_track():
    first, back = _fragment(1, 0, 3, 0, (RED, BLUE)), _fragment(2, 20, 23, 600, (RED, BLUE))
    assert reidentify([first, back]) == {1: 1, 2: 1}


def test_people_in_other_clothes_are_not_reidentified():
    first, other = _fragment(1, 0, 3, 0, (RED, BLUE)), _fragment(2, 20, 23, 600, (GREEN, BLUE))
    assert reidentify([first, other]) == {1: 1, 2: 2}


def test_two_people_in_view_at_once_are_never_one_however_alike():
    one, two = _fragment(1, 0, 3, 0, (RED, BLUE)), _fragment(2, 2, 5, 300, (RED, BLUE))
    assert reidentify([one, two]) == {1: 1, 2: 2}


def test_a_track_is_not_joined_to_a_person_whose_earlier_walk_it_shared_the_view_with():
    first, back = _fragment(1, 0, 3, 0, (RED, BLUE)), _fragment(2, 10, 13, 0, (RED, BLUE))
    alike = _fragment(3, 2, 5, 300, (RED, BLUE))  # in view with `first`, not with `back`
    alike.signatures = [0.9 * s + 0.1 * appearance(_crop(GREEN, GREEN)) for s in alike.signatures]
    assert reidentify([first, back, alike]) == {1: 1, 2: 1, 3: 3}


def test_tracks_too_short_to_know_by_their_colours_are_left_alone():
    first = _fragment(1, 0, 3, 0, (RED, BLUE))
    glimpse = _fragment(2, 20, 20 + (REID_MIN_BOXES - 2) / 5.0, 600, (RED, BLUE))
    assert len(glimpse.times) < REID_MIN_BOXES
    assert reidentify([first, glimpse]) == {1: 1, 2: 2}


def test_the_tracker_gives_a_walker_who_comes_back_after_20_s_one_track_when_reidentifying():
    fps, tracker = 5.0, PersonTracker(5.0)
    for n in range(140):
        t = n / fps
        if 4.0 <= t < 24.0:  # out of view for 20 s, far longer than stitching bridges
            tracker.update([], _frame([]), t)
            continue
        x = int(20 + 8 * (n % 20))
        box = PersonBox(x, 100, x + 30, 180, 1.0)
        tracker.update([box], _frame([(box.xyxy, (RED, BLUE))]), t)
    assert len(set(tracker.track_ids(stitch_fragments=True).values())) == 2
    assert set(tracker.track_ids(stitch_fragments=True, reidentify_people=True).values()) == {1}


def test_a_chain_of_look_alikes_does_not_join_its_two_ends():
    first, middle, last = (_fragment(k, t, t + 3, 0, (RED, BLUE)) for k, t in ((1, 0), (2, 10), (3, 20)))
    red_blue, green = appearance(_crop(RED, BLUE)), appearance(_crop(GREEN, GREEN))
    middle.signatures = [0.9 * red_blue + 0.1 * green] * len(middle.times)
    last.signatures = [0.6 * red_blue + 0.4 * green] * len(last.times)
    ab, bc = bhattacharyya(red_blue, middle.signatures[0]), bhattacharyya(middle.signatures[0], last.signatures[0])
    # each step is small, the ends differ
    assert ab < bc < REID_MAX_APPEARANCE < bhattacharyya(red_blue, last.signatures[0])
    assert reidentify([first, middle, last]) == {1: 1, 2: 1, 3: 3}


def test_a_look_alike_long_after_is_left_to_a_sightings_search():
    first = _fragment(1, 0, 3, 0, (RED, BLUE))
    much_later = _fragment(2, 3 + REID_MAX_GAP_S + 1, 6 + REID_MAX_GAP_S + 1, 0, (RED, BLUE))
    assert reidentify([first, much_later]) == {1: 1, 2: 2}


def test_a_person_who_keeps_coming_back_is_one_track_however_long_in_all():
    visits = [_fragment(k, t, t + 3, 0, (RED, BLUE)) for k, t in enumerate(np.arange(0, 3 * REID_MAX_GAP_S, 60), 1)]
    assert set(reidentify(visits).values()) == {1}


def _met(colours_after, lost_colours, lost_x0=400):
    """A walker who stands at x 200 for 6 s in red over blue and, from 3 s, a box there in
    `colours_after` (the tracker followed it on to someone else); and a walker in `lost_colours`
    coming from `lost_x0` towards them, lost at 2 s."""
    stands = _fragment(1, 0, 6, 200, (RED, BLUE), speed=0)
    later = appearance(_crop(*colours_after))
    stands.signatures = [s if t < 3 else later for t, s in zip(stands.times, stands.signatures)]
    comes = _fragment(2, 0, 2, lost_x0, lost_colours, speed=-80)  # 80 px/s, one box height
    return stands, comes


def test_a_track_that_passed_to_the_walker_lost_there_is_cut_where_it_did():
    stands, comes = _met((GREEN, GREEN), (GREEN, GREEN))
    fragments, cuts = split_handoffs([stands, comes], next_key=10)
    assert list(cuts) == [1] and cuts[1] == (pytest.approx(3.0), 10)
    assert [(f.key, len(f.times)) for f in fragments] == [(1, 15), (10, 16), (2, 11)]  # 0-2.8 s, 3-6 s


def test_the_later_part_of_a_cut_track_joins_the_walker_it_passed_to_and_not_its_own_earlier_part():
    stands, comes = _met((GREEN, GREEN), (GREEN, GREEN))
    fragments, cuts = split_handoffs([stands, comes], next_key=10)
    assert stitch(fragments, last=cuts) == {1: 1, 10: 2, 2: 2}


def test_a_track_whose_colours_change_is_not_cut_when_no_walker_like_the_change_was_lost_there():
    stands, comes = _met((GREEN, GREEN), (RED, BLUE))  # the lost walker is dressed as the first
    assert split_handoffs([stands, comes], next_key=10)[1] == {}
    stands, far = _met((GREEN, GREEN), (GREEN, GREEN), lost_x0=2000)  # lost far away
    assert split_handoffs([stands, far], next_key=10)[1] == {}


def test_two_people_kept_apart_are_not_reidentified_however_alike():
    first, back = _fragment(1, 0, 3, 0, (RED, BLUE)), _fragment(2, 20, 23, 600, (RED, BLUE))
    assert reidentify([first, back], apart={(1, 2)}) == {1: 1, 2: 2}


def test_the_tracker_gives_the_boxes_after_a_handoff_the_track_of_the_walker_they_show():
    fps, tracker = 5.0, PersonTracker(5.0)  # a man stands at x 200; a woman in green walks up to him
    seen = []
    for n in range(31):
        t = n / fps
        man = PersonBox(200, 100, 230, 180, 1.0)
        colours = [(man.xyxy, (RED, BLUE) if t < 3 else (GREEN, GREEN))]  # from 3 s the box is her
        boxes = [man]
        if t <= 2.0:
            x = int(400 - 80 * t)
            boxes.append(PersonBox(x, 100, x + 30, 180, 1.0))
            colours.append((boxes[-1].xyxy, (GREEN, GREEN)))
        keys = tracker.update(boxes, _frame(colours, size=(300, 640)), t)
        seen += [(t, box.x1, key) for box, key in zip(boxes, keys)]
    ids = tracker.track_ids(stitch_fragments=True)
    track = {(t, x): ids[tracker.key_at(key, t)] for t, x, key in seen if key >= 0}
    man_first, woman = track[(1.0, 200)], track[(1.0, int(400 - 80))]
    assert man_first != woman
    assert track[(2.8, 200)] == man_first
    assert track[(3.0, 200)] == track[(6.0, 200)] == woman


def test_the_earlier_part_of_a_cut_track_is_not_continued_by_whoever_appears_where_it_ended():
    stands, comes = _met((GREEN, GREEN), (GREEN, GREEN))
    fragments, cuts = split_handoffs([stands, comes], next_key=10)
    nearby = _fragment(3, 3.6, 6, 240, (RED, BLUE), speed=0)  # someone in his colours, beside him
    assert stitch(fragments + [nearby])[3] == 1  # what it would join without `last`
    assert stitch(fragments + [nearby], last=cuts)[3] == 3
