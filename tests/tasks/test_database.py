"""One engine per ledger URL per process, migrated once; forgetting a URL closes it (both databases)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tasks.database as database


def test_the_same_url_gives_the_same_engine_migrated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrades: list[object] = []
    real = database.migrate
    monkeypatch.setattr(database, "migrate", lambda engine: (upgrades.append(engine), real(engine)))
    url = f"sqlite:///{tmp_path}/nested/ledger.db"
    first, second = database.connect(url), database.connect(url)
    assert first is second and len(upgrades) == 1
    assert (tmp_path / "nested" / "ledger.db").is_file()
    other = database.connect(f"sqlite:///{tmp_path}/other.db")
    assert other is not first and len(upgrades) == 2
    database.forget(url)
    assert database.connect(url) is not first and len(upgrades) == 3
