"""The status banner and the verdict banner: one self-contained HTML block (inline CSS, nothing
fetched), large type for a shared screen, every state said in words as well as in colour."""

from __future__ import annotations

import re

from gamedaylib.banner import (
    AMBER,
    BLUE,
    GREEN,
    GREY,
    RED,
    Banner,
    VerdictBanner,
    status_banner_html,
    verdict_banner_html,
)
from gamedaylib.scenario import Tile

ACTIVE = (Tile("partition", "ACTIVE", "alarm"), Tile("consumer lag", "1,234", "info"),
          Tile("gateway buffer", "56", "warn"), Tile("canaries lost", "3", "alarm"))
NOTHING_YET = (Tile("partition", "OFF", "unknown"), Tile("consumer lag", "—", "unknown"))


def test_each_tile_says_its_state_in_words_and_colour() -> None:
    html = status_banner_html(title="Event Buffering", offset="T+05:12", tiles=ACTIVE, accent="alarm")
    for text in ("Event Buffering", "T+05:12", "ACTIVE", "1,234", "56", "canaries lost", "consumer lag"):
        assert text in html
    assert RED in html and BLUE in html and AMBER in html
    assert f"border-left:14px solid {RED}" in html  # the fault in force colours the edge
    unknown = status_banner_html(title="Pre-Flight", offset="before T+0, run +00:03", tiles=NOTHING_YET)
    assert GREY in unknown and "—" in unknown and RED not in unknown
    healed = status_banner_html(title="Event Replay", offset="T+15:00", tiles=(Tile("partition", "HEALED", "ok"),),
                                accent="ok")
    assert GREEN in healed and ">HEALED<" in healed and RED not in healed


def test_the_banner_is_self_contained_escaped_and_large() -> None:
    html = status_banner_html(title="<script>alert(1)</script>", offset="T+00:01",
                              tiles=(Tile("<i>lag</i>", "1 & 2", "info"),), subtitle="run <r1>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;i&gt;lag&lt;/i&gt;" in html
    assert "1 &amp; 2" in html and "run &lt;r1&gt;" in html
    assert not re.search(r"(src|href)=|url\(|@import|<link|<style", html)  # inline CSS only, nothing fetched
    assert re.search(r"font-size:\s*(3[4-9]|4\d)px", html)  # big enough for the back of the room
    assert "role='status'" in html and "aria-label='[&lt;script&gt;alert(1)&lt;/script&gt;] | T+00:01" in html


def test_the_banner_object_reads_as_one_line_of_text() -> None:
    banner = Banner("Heal", "T+00:20", ACTIVE, "GAMEDAY-001 · run r1", "alarm")
    assert banner.text() == ("[Heal] | T+00:20 | partition ACTIVE | consumer lag 1,234 | gateway buffer 56 | "
                             "canaries lost 3")
    bundle = banner._repr_mimebundle_()
    assert bundle["text/plain"] == banner.text()
    assert "GAMEDAY-001 · run r1" in bundle["text/html"] and "gameday-banner" in bundle["text/html"]


def test_the_verdict_is_as_large_as_the_banner_and_says_why() -> None:
    colours = {"pass": GREEN, "fail": RED, "aborted": AMBER}
    for verdict, colour in colours.items():
        html = verdict_banner_html(gameday="GAMEDAY-001", verdict=verdict)
        assert f"background:{colour}" in html and verdict.upper() in html
        assert re.search(r"font-size:\s*(6\d|[7-9]\d)px", html)
    stopped = VerdictBanner("GAMEDAY-001", "fail", "gateway buffer 100 % full at T+00:04; limit 90 % <b>",
                            "/out/GAMEDAY-001/r1")
    bundle = stopped._repr_mimebundle_()
    assert bundle["text/plain"] == "GAMEDAY-001 verdict: FAIL (gateway buffer 100 % full at T+00:04; limit 90 % <b>)"
    assert "limit 90 % &lt;b&gt;" in bundle["text/html"] and "archive: /out/GAMEDAY-001/r1" in bundle["text/html"]
    assert VerdictBanner("GAMEDAY-001", "pass")._repr_mimebundle_()["text/plain"] == "GAMEDAY-001 verdict: PASS"
