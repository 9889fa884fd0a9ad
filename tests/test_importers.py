"""Importers account for every row: imported, or reported with a reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from features.segment_spec import SegmentParser
from features.table import read_table, table_to_events, write_table
from training.importers import ColumnMapping, import_segment_jsonl, import_table, import_taobao
from training.summary import type_counts

ROOT = Path(__file__).resolve().parent.parent
SLICE = "UserBehavior_2017-11-26_0100-0310.csv"
HEAD = "UserBehavior_head_usersorted.csv"


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (SLICE, {"product_view": 98_361, "add_to_cart": 6_063, "wishlist_add": 3_383, "purchase": 2_493}),
        (HEAD, {"product_view": 3_926, "add_to_cart": 190, "wishlist_add": 128, "purchase": 77}),
    ],
)
def test_taobao_files_every_row_accounted(taobao_dir: Path, tmp_path: Path, name: str, expected: dict) -> None:
    table, report = import_taobao([taobao_dir / name])
    assert report.accounted and report.rejected == 0
    assert report.rows == sum(expected.values()) == table.num_rows
    assert type_counts(table) == expected
    assert table.column("message_id").to_pylist() == list(dict.fromkeys(table.column("message_id").to_pylist()))
    again = read_table(write_table(table, tmp_path / "tb.parquet"))
    assert again.equals(table)


@pytest.mark.realdata
def test_taobao_sessions_cut_at_30_minutes(taobao_dir: Path) -> None:
    table, _ = import_taobao([taobao_dir / HEAD])
    frame = table.select(["profile_id", "ts", "session_id"]).to_pandas().sort_values(["profile_id", "ts"])
    gaps = frame.groupby("profile_id")["ts"].diff().dt.total_seconds()
    new_session = frame["session_id"] != frame.groupby("profile_id")["session_id"].shift()
    assert ((gaps > 1800) == new_session.where(gaps.notna(), False)).all()


def test_taobao_bad_rows_reported_with_line_and_reason(tmp_path: Path) -> None:
    src = tmp_path / "tb.csv"
    src.write_text(
        "1,10,100,pv,1511658000\n1,10,100,pv,1511658000\n2,11,101,click,1511658001\n"
        "3,12,102,buy\n4,13,103,cart,soon\n5,14,104,fav,1511658009\n"
    )
    table, report = import_taobao([src])
    assert (report.rows, report.imported, report.rejected) == (6, 3, 3)
    assert [(line, reason.split(" ")[0]) for _, line, reason in report.errors] == [
        (3, "unknown"),
        (4, "expected"),
        (5, "timestamp"),
    ]
    ids = table.column("message_id").to_pylist()
    assert ids[0] != ids[1]  # an exact repeat is a second event, not lost
    assert table.column("ts").to_pylist()[0].timestamp() == 1511658000


def test_segment_jsonl(parser: SegmentParser, tmp_path: Path) -> None:
    lines = [
        {
            "type": "track",
            "event": "Product Added",
            "userId": "u1",
            "messageId": "a",
            "timestamp": "2024-01-01T00:00:00Z",
            "receivedAt": "2024-01-01T00:00:03Z",
            "sentAt": "2024-01-01T00:00:01Z",
            "properties": {"price": 3},
        },
        {
            "batch": [
                {"type": "page", "userId": "u2", "messageId": "b", "timestamp": "2024-01-01T00:00:00Z"},
                {"type": "page", "messageId": "c", "timestamp": "2024-01-01T00:00:00Z"},
            ]
        },
    ]
    src = tmp_path / "e.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n\n{broken\n")
    table, report = import_segment_jsonl([src], parser)
    assert (report.rows, report.imported, report.rejected) == (4, 2, 2)
    assert "batch[1].userId" in report.errors[0][2] and report.errors[1][1] == 4
    first = next(table_to_events(table))
    assert first.ts_ms == first.received_ms - 1000  # skew corrected against receivedAt


def test_rees46_mapping(tmp_path: Path) -> None:
    src = tmp_path / "2019-Oct.csv"
    src.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde\n"
        "2019-10-01 00:00:05 UTC,cart,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,9333\n"
        "2019-10-01 00:00:07 UTC,purchase,17200506,2053013559792632471,furniture.bedroom,,543.10,541312140,72d76fde\n"
        "2019-10-01 00:00:09 UTC,view,1307067,2053013558920217191,computers,lenovo,abc,554748717,9333\n"
        "yesterday,view,1307067,2053013558920217191,computers,lenovo,251.74,554748717,9333\n"
    )
    table, report = import_table([src], ColumnMapping.load(ROOT / "config/mappings/rees46.yaml"))
    assert (report.rows, report.imported, report.rejected) == (5, 3, 2)
    assert sorted(line for _, line, _ in report.errors) == [5, 6]
    assert type_counts(table) == {"product_view": 1, "add_to_cart": 1, "purchase": 1}
    assert table.column("price").to_pylist() == [35.79, 33.2, 543.1]
    assert table.column("session_id").to_pylist() == ["72d76fde", "9333", "72d76fde"]
    assert table.column("category").to_pylist()[1] == "appliances.water_heater"


def test_retailrocket_mapping(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n1433224214164,992329,addtocart,248676,\n"
        "1433221955914,257597,transaction,355908,4000\n1433221999999,7,rating,1,\n"
    )
    table, report = import_table([src], ColumnMapping.load(ROOT / "config/mappings/retailrocket.yaml"))
    assert report.accounted and report.rejected == 0
    assert type_counts(table) == {"product_view": 1, "add_to_cart": 1, "purchase": 1, "rating": 1}
    ts = pc.cast(table.column("ts"), "int64").to_pylist()
    assert ts[0] == 1433221332117
    again, _ = import_table([src], ColumnMapping.load(ROOT / "config/mappings/retailrocket.yaml"))
    assert again.column("message_id").equals(table.column("message_id"))


def test_mapping_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("columns: {user_id: u, ts: t, type: e, colour: c}\n")
    with pytest.raises(ValueError, match=r"columns.colour: not an event field"):
        ColumnMapping.load(bad)
    bad.write_text("columns: {user_id: u, ts: t, type: e}\ntypes: {v: viewed}\n")
    with pytest.raises(ValueError, match=r"types.v: 'viewed' is not a canonical type"):
        ColumnMapping.load(bad)
