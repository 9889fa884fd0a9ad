"""A state directory written by an earlier segflow (``tests/fixtures/state-v1``:
an event log, and a snapshot one event behind it, as after a crash) is read
by this one: every profile and membership comes back as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from models.intent_online import OnlineIntentModel
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.service import Service
from serving.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "state-v1"


def written_with() -> OnlineIntentModel:
    """A fresh online model as the fixture was written with: SGD at 0.02, the default then
    (the log is replayed through it where the snapshot cannot be read)."""
    return OnlineIntentModel(learning_rate=0.02)


def fixture_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, dict]:
    """A copy of the fixture's state directory, settings over it, and what it held."""
    monkeypatch.setenv("SEGFLOW_PII_KEY", "22" * 32)
    state = tmp_path / "state"
    shutil.copytree(FIXTURE, state)
    settings = Settings(
        state_dir=state, clock="event", admin_keys=[SecretStr("fixture-admin")], read_keys=[SecretStr("fixture-read")],
        segments=state / "segments.yaml",  # the config it was written under
    )  # fmt: skip
    return settings, json.loads((state / "expected.json").read_text())


def test_a_state_directory_of_an_earlier_version_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, expected = fixture_state(tmp_path, monkeypatch)
    service = Service(settings, Scorers(written_with(), intent_feature_names())).start()
    engine = service.engine
    assert engine is not None and service.log is not None
    assert service.log.count() == expected["events"] and engine.seq == expected["seq"]
    assert engine.watermark == expected["watermark"]
    got = {
        pid: {k: (None if isinstance(v, float) and v != v else v) for k, v in (engine.vector(pid) or {}).items()}
        for pid, _ in engine.store.items()
    }
    assert got == expected["features"]
    assert {pid: sorted(u.members.entered) for pid, u in engine.users.items()} == expected["members"]
    service.close()


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty", "not a snapshot", "older version", "pickle"])
def test_a_damaged_snapshot_means_a_rebuild_not_a_failed_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    settings, expected = fixture_state(tmp_path, monkeypatch)
    state = settings.state_dir
    snap = state / "snapshot.bin"
    if damage != "pickle":  # two snapshots of this version: the latest damaged, the one before it whole
        for _ in range(2):
            Service(settings, Scorers(written_with(), intent_feature_names())).start().close()
        assert (state / "snapshot.prev.bin").read_bytes().startswith(b"SFSNAP\x02")
    data = snap.read_bytes()
    snap.write_bytes(
        {
            "corrupt": data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:],
            "truncated": data[: len(data) // 2],
            "empty": b"",
            "not a snapshot": b'{"version": 99}',
            "older version": b"SFSNAP\x01" + data[7:],
            "pickle": data,  # the fixture's own: version 1 was a pickle, never read, rebuilt from the log
        }[damage]
    )
    service = Service(settings, Scorers(written_with(), intent_feature_names())).start()
    engine = service.engine
    assert engine is not None
    got = {
        pid: {k: (None if isinstance(v, float) and v != v else v) for k, v in (engine.vector(pid) or {}).items()}
        for pid, _ in engine.store.items()
    }
    assert got == expected["features"]
    service.close()


def test_a_fresh_online_model_is_replayed_at_the_rate_its_record_names(tmp_path: Path) -> None:
    """A log written while no online model was registered names it ``fresh``
    (before its rate was kept: 0.02) or ``fresh:RATE``: a replay builds that one."""
    from models.intent_online import OnlineIntentModel as Online
    from serving.scorers import load_scorers

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    now = load_scorers(intent_feature_names(), tracking_uri=uri)
    assert now.fresh and now.versions["segflow-intent-online"] == f"fresh:{Online().learning_rate}"
    for named, rate in (("fresh", 0.02), ("fresh:0.02", 0.02), ("fresh:0.003", 0.003)):
        then = load_scorers(intent_feature_names(), tracking_uri=uri, pinned={"segflow-intent-online": named})
        assert then.online.learning_rate == rate and then.online.pipeline_["model"].optimizer.learning_rate == rate
        assert then.versions["segflow-intent-online"] == f"fresh:{rate}"
