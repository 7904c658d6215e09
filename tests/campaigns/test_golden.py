"""Golden broken campaigns: each file in ``broken/`` states, on its first line, the exact problem
(line, column, field path and message) that loading it in a workspace must report.

Adding a case is adding a file: write the broken campaign, put ``# expect: L:C: path: message`` on
top, and the test holds the loader to it, so a message or a position can never drift unnoticed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from campaigns import CampaignError, load_workspace
from tests.support import copy_workspace

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
EXPECT = "# expect: "


def test_there_are_enough_golden_cases() -> None:
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_campaign_reports_exactly_this(tmp_path: Path, path: Path) -> None:
    first_line = path.read_text().split("\n", 1)[0]
    assert first_line.startswith(EXPECT), f"{path.name} has no '# expect:' line"
    expected = f"acme/campaigns/{path.name}:{first_line.removeprefix(EXPECT)}"

    root = copy_workspace(tmp_path)
    config = root / "workspace.yaml"
    config.write_text(config.read_text() + "webhook_hosts: [hooks.acme.example]\n")
    shutil.copy(path, root / "campaigns" / path.name)
    with pytest.raises(CampaignError) as info:
        load_workspace(root)
    reported = [str(p) for p in info.value.problems]
    assert expected in reported, "\n".join(reported)
    # the broken file spoils only itself: the demo campaign next to it is not blamed
    assert not any(r.startswith("acme/campaigns/welcome.yaml") for r in reported)
