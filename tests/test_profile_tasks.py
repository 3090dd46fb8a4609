"""Profile evaluation data side: template profile, downstream rows and prompts, scores - hand-checked."""

from __future__ import annotations

import pytest
from test_uqa import HISTORIES, hand_data

from llmrec.data.schema import UserHistory
from llmrec.errors import ConfigError, DataError
from llmrec.tasks.profile import (
    build_profile_tasks,
    parse_rating,
    profile_downstream_prompt,
    profile_write_prompt,
    score_downstream,
    template_profile,
)


def test_template_profile_by_hand():
    data = hand_data()
    ctx = data.histories()["u1"].prefix(9)
    # 9 movies: Comedy tags 4 (44%), Thriller 4 (44%, after Comedy by genre order), Action 3 (33%);
    # ratings 5+4+3+4+2+4+5+4+5 = 36 -> 4.0; decades 1990s x5 (1995), 1980s x2, 1970s x1, 1940s x1
    assert template_profile(ctx, data) == (
        "Top genres: Comedy (44%), Thriller (44%), Action (33%). Average rating: 4.0 / 5 over 9 movies. "
        "Favourite decade: 1990s."
    )
    assert template_profile(ctx, data, top=1).startswith("Top genres: Comedy (44%). ")
    with pytest.raises(DataError, match="empty history"):
        template_profile(ctx.prefix(0), data)


def test_template_profile_unrated_and_unknown():
    data = hand_data()
    ctx = UserHistory("u9", ("8", "4"), (1, 2), (None, None))  # unknown-genre movie, no ratings
    assert template_profile(ctx, data) == (
        "Top genres: Drama (50%), Romance (50%), War (50%). Favourite decade: 1940s."
    )


def test_build_profile_tasks_by_hand():
    data = hand_data()
    rows = build_profile_tasks(data, split="test")
    got = {(r.user_id, r.task): r for r in rows}
    assert set(got) == {("u1", "next_genre"), ("u1", "rating"), ("u2", "rating")}  # u2's next is "unknown"
    g = got[("u1", "next_genre")]
    assert (g.item_id, g.answer, g.context.item_ids) == ("9", "Crime", tuple(HISTORIES["u1"][0][:-1]))
    assert "unknown" not in g.options and g.options[0] == "Action"
    r = got[("u1", "rating")]
    assert (r.answer, r.item_title, r.item_categories) == ("3", "Fargo (1996)", ("Crime", "Drama", "Thriller"))
    assert got[("u2", "rating")].answer == "1" and got[("u2", "rating")].item_categories == ()
    valid = {(r.user_id, r.task): r for r in build_profile_tasks(data, split="valid")}
    assert valid[("u1", "rating")].answer == "5" and valid[("u1", "next_genre")].answer == "Crime"
    assert valid[("u1", "rating")].context.item_ids == tuple(HISTORIES["u1"][0][:-2])
    train = build_profile_tasks(data, split="train", tasks=["rating"])
    assert sorted(len(r.context) for r in train) == [5, 6, 7]
    with pytest.raises(ConfigError, match="unknown profile task"):
        build_profile_tasks(data, tasks=["next_title"])


def test_ml100k_profile_tasks_no_leakage(ml100k):
    hist = ml100k.histories()
    rows = build_profile_tasks(ml100k, split="test")
    assert sum(r.task == "rating" for r in rows) == 943
    for r in rows:
        h = hist[r.user_id]
        assert r.context == h.prefix(len(h) - 1) and r.item_id == h.item_ids[-1]
        assert r.item_id not in r.context.item_ids


def test_downstream_prompts():
    data = hand_data()
    rows = {(r.user_id, r.task): r for r in build_profile_tasks(data)}
    genre, rating = rows[("u1", "next_genre")], rows[("u1", "rating")]
    with_profile = profile_downstream_prompt("Loves thrillers.", genre)
    assert with_profile.startswith("User profile: Loves thrillers.\n")
    assert "Options: Action, Animation" in with_profile and with_profile.endswith("Answer with only the genre.")
    bare = profile_downstream_prompt(None, genre)
    assert "profile" not in bare.lower() and bare == profile_downstream_prompt("  ", genre)
    assert "Options" not in profile_downstream_prompt(None, genre, show_options=False)
    text = profile_downstream_prompt("Loves thrillers.", rating)
    assert 'rate the movie "Fargo (1996)" [Crime, Drama, Thriller] on a scale from 1 to 5' in text
    assert "Fargo" not in profile_downstream_prompt(None, genre)  # next_genre must not reveal the movie
    unrated_genres = profile_downstream_prompt(None, rows[("u2", "rating")])
    assert '"Mystery Item" on a scale' in unrated_genres


def test_profile_write_prompt():
    data = hand_data()
    ctx = data.histories()["u1"].prefix(9)
    text = profile_write_prompt(ctx, data, max_items=2)
    lines = text.splitlines()
    assert lines[1:3] == ["Aliens (1986) — Action, Sci-Fi, Thriller, War: 4/5",
                          "Usual Suspects, The (1995) — Crime, Thriller: 5/5"]
    assert "2-3 sentence profile" in lines[3] and "Alien (1979)" not in text
    with pytest.raises(DataError, match="empty history"):
        profile_write_prompt(ctx.prefix(0), data)


def test_score_downstream_by_hand():
    data = hand_data()
    rows = build_profile_tasks(data, split="test") + build_profile_tasks(data, split="valid")
    # test: u1 genre (Crime), u1 rating (3), u2 rating (1); valid: u1 genre (Crime), u1 rating (5)
    # (u2's valid context has 4 < 5 movies: skipped)
    assert [(r.task, r.answer) for r in rows] == [("next_genre", "Crime"), ("rating", "3"), ("rating", "1"),
                                                  ("next_genre", "Crime"), ("rating", "5")]
    preds = ["crime", "4", "no idea", "Drama", "5 stars"]
    got = score_downstream(preds, rows)
    # genre: 1 of 2. rating errors: |4-3| = 1; unparsable vs gold 1 -> worst case 5 -> 4; |5-5| = 0
    assert got["next_genre"] == {"accuracy": 0.5, "n": 2}
    assert got["rating"] == {"mae": pytest.approx(5 / 3), "n": 3, "parse_failure_rate": pytest.approx(1 / 3)}
    # out of range counts as unparsable: gold 5 -> worst case 1 -> error 4
    assert score_downstream(["9"], rows[4:5])["rating"] == {"mae": 4.0, "n": 1, "parse_failure_rate": 1.0}
    assert parse_rating("I'd say 3.5.") == 3.5 and parse_rating("0") is None
    with pytest.raises(DataError, match="predictions"):
        score_downstream(preds[:1], rows)
