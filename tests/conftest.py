"""Shared fixtures: real data location, the parser, and CI's no-skip rule.

Real-data tests read ``$SEGFLOW_DATA`` (default ``../shared/data`` beside the
repository) and skip with a message when it is absent. In CI
(``SEGFLOW_NO_SKIPS=1``, set by ``.ci/run``) any skipped test fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import HealthCheck, settings

from features.pseudonyms import Pseudonymizer
from features.segment_spec import SegmentParser
from serving import snapshot

settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = bytes(range(32))

_skipped: list[str] = []


def data_dir() -> Path:
    return Path(os.environ.get("SEGFLOW_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def taobao_dir() -> Path:
    path = data_dir() / "taobao"
    if not path.is_dir():
        pytest.skip(f"real Taobao data not found at {path}: set SEGFLOW_DATA to the folder holding taobao/")
    return path


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The local Redis (tests use their own key prefix and delete only their keys)."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not answering on 127.0.0.1:6379: install redis-server and start it")
    yield client
    client.close()


def snapshot_text(path: Path) -> str:
    """A snapshot as text, decompressed, so a search sees everything it holds."""
    return orjson.dumps(snapshot.decode(path.read_bytes())).decode()


@pytest.fixture(scope="session")
def read_snapshot() -> Callable[[Path], str]:
    return snapshot_text


@pytest.fixture(scope="session")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(TEST_KEY)


@pytest.fixture(scope="session")
def parser(pseudonymizer: Pseudonymizer) -> SegmentParser:
    return SegmentParser(pseudonymizer)


@pytest.fixture(autouse=True)
def _segflow_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test's key file and state out of the user's home."""
    monkeypatch.setenv("SEGFLOW_HOME", str(tmp_path_factory.getbasetemp() / "segflow-home"))
    monkeypatch.delenv("SEGFLOW_PII_KEY", raising=False)
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("SEGFLOW_NO_SKIPS") == "1" and _skipped:
        print(f"\nSEGFLOW_NO_SKIPS=1 but {len(_skipped)} tests were skipped: {_skipped[:10]}")
        session.exitstatus = 1
