"""The contact vault, consent and the contacts an identify gives: sealed at
rest, bound to their profile, rotatable; suppression by id or address;
contacts read from exactly the accepted events of a request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contacts import Contact, Sighting, contacts_of, subscriber_hash
from features.events import Event, format_ms
from features.pseudonyms import Pseudonymizer
from features.segment_spec import SegmentParser
from serving.consent import Consent
from serving.destinations.config import DestinationError, Destinations
from serving.people import People
from serving.vault import KEYS_ENV, Deletions, Vault, VaultError, VaultKeys

SCRUB = Pseudonymizer(b"1" * 32)
ANN = Contact("ann@example.com", "+15550100001", subscriber_hash("ann@example.com"))


def test_contacts_are_sealed_bound_to_their_profile_and_merged_newest_first(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key"))
    vault.put("u1", ANN, 100)
    vault.add([Sighting("u1", Contact(None, "+15550100002", None), 200), Sighting("u1", Contact("old@x.io"), 50)])
    assert vault.get("u1") == Contact("ann@example.com", "+15550100002", ANN.email_md5)
    raw = (tmp_path / "vault.db").read_bytes() + (tmp_path / "vault.db-wal").read_bytes()
    assert b"ann@example.com" not in raw and b"5550100002" not in raw
    with sqlite3.connect(tmp_path / "vault.db") as db:  # a row moved to another profile does not open
        db.execute("UPDATE contacts SET profile_id = 'u2' WHERE profile_id = 'u1'")
    with pytest.raises(VaultError, match="does not open"):
        vault.get("u2")
    other = Vault(tmp_path / "vault.db", VaultKeys.of([b"9" * 32]))
    with pytest.raises(VaultError, match="not among the keys"):
        other.get("u2")


def test_rotation_seals_every_row_under_a_new_key_and_the_file_keeps_only_it(tmp_path: Path) -> None:
    keyfile = tmp_path / "vault.key"
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(keyfile))
    for i in range(20):
        vault.put(f"u{i}", Contact(f"p{i}@example.com"), i)
    old = vault.keys.current
    done = vault.rotate()
    assert done["resealed"] == 20 and done["key_id"] != old
    assert len(keyfile.read_text().split()) == 1 and oct(keyfile.stat().st_mode & 0o777) == "0o600"
    reopened = Vault(tmp_path / "vault.db", VaultKeys.load(keyfile))
    assert reopened.get("u7") == Contact("p7@example.com")
    with sqlite3.connect(tmp_path / "vault.db") as db:
        assert {k for (k,) in db.execute("SELECT DISTINCT key_id FROM contacts")} == {done["key_id"]}


def test_keys_from_the_environment_new_one_first_then_a_reseal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = "aa" * 32, "bb" * 32
    monkeypatch.setenv(KEYS_ENV, old)
    Vault(tmp_path / "vault.db", VaultKeys.load()).put("u1", ANN, 1)
    monkeypatch.setenv(KEYS_ENV, f"{new},{old}")
    vault = Vault(tmp_path / "vault.db", VaultKeys.load())
    assert vault.get("u1") == ANN and vault.rotate()["resealed"] == 1
    monkeypatch.setenv(KEYS_ENV, new)
    assert Vault(tmp_path / "vault.db", VaultKeys.load()).get("u1") == ANN
    monkeypatch.setenv(KEYS_ENV, "not hex")
    with pytest.raises(VaultError, match="hex"):
        VaultKeys.load()


def test_with_the_vault_off_only_the_subscriber_hash_is_kept(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key"), keep_raw=False)
    vault.put("u1", ANN, 1)
    assert vault.get("u1") == Contact(None, None, ANN.email_md5)


def test_erasure_deletes_the_row(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key"))
    vault.put("u1", ANN, 1)
    assert vault.erase("u1") and vault.get("u1") is None and len(vault) == 0
    assert not vault.erase("u1")


def test_suppression_by_id_or_address_and_unsubscribe_events(tmp_path: Path) -> None:
    consent = Consent(tmp_path / "vault.db", SCRUB)
    consent.suppress(["ANN@example.com ", "u9"], "list: bounced", 5)
    assert consent.why("u1", Contact(None, None, ANN.email_md5)) == "list: bounced"  # by hash: the vault off
    assert consent.why("u9", None) == "list: bounced" and consent.why("u2", None) is None
    e = Event("m1", "Email Unsubscribed", "u2", None, 1_700_000_000_000, 1_700_000_000_000, name="Email Unsubscribed")
    assert consent.observe([e]) == 1 and consent.why("u2", None).startswith("unsubscribed: Email Unsubscribed at 2023")
    assert consent.lift(["ann@example.com"]) == 1 and consent.why("u1", ANN) is None
    stored = (tmp_path / "vault.db").read_bytes() + (tmp_path / "vault.db-wal").read_bytes()
    assert b"ann@example.com" not in stored.lower() and ANN.email_md5.encode() not in stored


item = st.one_of(
    st.builds(
        lambda u, e: {"type": "identify", "userId": u, "traits": {"email": e}},
        st.sampled_from(["u1", "u2", "u3"]),
        st.emails(),
    ),
    st.builds(lambda u: {"type": "identify", "userId": u, "traits": {"plan": "gold"}}, st.sampled_from(["u1", "u4"])),
    st.builds(lambda e: {"type": "identify", "traits": {"email": e}}, st.emails()),  # no id: rejected
    st.builds(lambda u: {"type": "track", "event": "Product Viewed", "userId": u}, st.sampled_from(["u1", "u5"])),
    st.builds(
        lambda e: {"type": "identify", "userId": "u6", "timestamp": e, "traits": {"email": "a@b.io"}},
        st.just("not a time"),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(item, max_size=12))
def test_contacts_come_from_exactly_the_accepted_identify_events(items: list[dict]) -> None:
    parsed = SegmentParser(SCRUB).parse_payload({"batch": items}, received_ms=1_700_000_000_000)
    found = contacts_of({"batch": items}, parsed)
    refused = {r.index for r in parsed.rejected}
    expected = [
        (i["userId"], i["traits"]["email"].strip())
        for n, i in enumerate(items)
        if n not in refused and i["type"] == "identify" and "email" in i.get("traits", {})
    ]
    assert [(s.profile_id, s.contact.email) for s in found] == expected
    assert all(s.contact.email_md5 == subscriber_hash(s.contact.email or "") for s in found)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- {name: x, kind: sendgrid, url: 'http://h'}", "sendgrid"),
        ("- {name: k, kind: klaviyo, lists: {vip: L1}}", "needs an API key"),
        ("- {name: k, kind: klaviyo, api_key: k, lists: {vip: L1}, events: [carts]}", "no list in lists: ['carts']"),
        ("- {name: k, kind: klaviyo, api_key: k, lists: {vip: L1}, metric: Entered}", "put {segment} in it"),
        ("- {name: m, kind: mailchimp, api_key: k-us1, audience: a, concurrency: 11}", "concurrency"),
        ("- {name: m, kind: mailchimp, api_key: k-us1, audience: a, flap_guard: 10m}", "flap_guard"),
    ],
)
def test_a_bad_destination_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(DestinationError, match=r"destinations\.yaml: ") as exc:
        Destinations.loads("destinations:\n  " + text)
    assert problem in str(exc.value)


def test_rotation_reseals_the_contacts_deletion_requests_still_hold(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key"))
    deletions = Deletions(vault)
    deletions.request(["klaviyo"], "u1", ANN, 10)
    vault.rotate()
    reopened = Deletions(Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key")))
    assert reopened.due("klaviyo", 20) == [("u1", ANN, 0)]


def test_erasing_again_before_the_request_is_sent_keeps_the_contact_it_needs(tmp_path: Path) -> None:
    people = People(tmp_path, SCRUB, VaultKeys.load(tmp_path / "vault.key"))
    people.observe([], [Sighting("u1", ANN, 5)], lambda _: False)
    assert people.erase("u1", ["klaviyo", "mailchimp"])
    people.erase("u1", ["klaviyo", "mailchimp"])  # the vault has nothing left: the requests keep theirs
    assert people.deletions.due("mailchimp", 10**13) == [("u1", ANN, 0)]
    people.deletions.done("mailchimp", "u1", "deleted permanently", 10)
    assert people.deletions.due("mailchimp", 10**13) == [] and people.vault.get("u1") is None
    with sqlite3.connect(tmp_path / "vault.db") as db:
        sealed = db.execute("SELECT destination, sealed IS NULL FROM deletion_requests ORDER BY 1").fetchall()
    assert sealed == [("klaviyo", 0), ("mailchimp", 1)]  # the sent one holds no contact any more


def test_a_deletion_request_whose_contact_does_not_open_is_ended_not_retried_for_ever(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.db", VaultKeys.load(tmp_path / "vault.key"))
    Deletions(vault).request(["klaviyo"], "u1", ANN, 10)
    Deletions(vault).request(["klaviyo"], "u2", ANN, 11)
    with sqlite3.connect(tmp_path / "vault.db") as db:
        db.execute("UPDATE deletion_requests SET key_id = 'gone' WHERE profile_id = 'u1'")
    assert Deletions(vault).due("klaviyo", 20) == [("u2", ANN, 0)]
    assert Deletions(vault).of("u1")[0]["status"] == "dead"


def test_an_unsubscribe_of_an_erased_user_is_not_kept(tmp_path: Path) -> None:
    people = People(tmp_path, SCRUB, VaultKeys.load(tmp_path / "vault.key"))
    e = Event("m1", "Email Unsubscribed", "u2", None, 1_700_000_000_000, 1_700_000_000_000, name="Email Unsubscribed")
    people.observe([e], [Sighting("u2", ANN, 1)], lambda pid: pid == "u2")
    assert people.suppressed("u2") is None and people.vault.get("u2") is None


def test_contacts_follow_the_endpoint_and_keep_only_e164_phones() -> None:
    parser = SegmentParser(SCRUB)
    body = {"userId": "u1", "traits": {"email": "ann@example.com", "mobile": "+44 20 7946 0958"},
            "batch": [{"type": "identify", "userId": "u9", "traits": {"email": "x@y.io"}}]}  # fmt: skip
    parsed = parser.parse_payload(body, received_ms=1_700_000_000_000, kind="identify")
    [found] = contacts_of(body, parsed, "identify")
    assert (found.profile_id, found.contact.email, found.contact.phone) == ("u1", "ann@example.com", "+442079460958")
    local = {"userId": "u1", "traits": {"phone": "555-010-9999"}}  # no country: not E.164, not kept
    assert (
        contacts_of(local, parser.parse_payload(local, received_ms=1_700_000_000_000, kind="identify"), "identify")
        == []
    )


def test_the_latest_consent_signal_wins_and_a_list_entry_stays_until_lifted(tmp_path: Path) -> None:
    consent = Consent(tmp_path / "vault.db", SCRUB)

    def identify(user: str, value: object, t: int) -> Event:
        return Event(f"i{t}", "identify", user, None, t, t, kind="identify", traits={"email_consent": value})

    consent.observe([identify("u1", False, 100)])
    assert consent.why("u1", None).startswith("trait email_consent: false at")
    consent.observe([identify("u1", "yes", 200)])
    assert consent.why("u1", None) is None
    consent.observe([identify("u1", False, 150)])  # older than the consent given: changes nothing
    assert consent.why("u1", None) is None
    unsubscribe = Event("m", "Email Unsubscribed", "u1", None, 300, 300, name="Email Unsubscribed")
    consent.observe([unsubscribe])
    assert consent.why("u1", None).startswith("unsubscribed")
    consent.suppress(["u2"], "list: complaint", 1)
    consent.observe([identify("u2", True, 400)])  # a trait does not undo the list
    assert consent.why("u2", None) == "list: complaint"
    assert consent.lift(["u2"]) == 1 and consent.why("u2", None) is None
    consent.observe([identify("u3", "maybe", 500)])  # not a consent value: no signal
    assert consent.why("u3", None) is None


def test_a_suppression_table_from_before_consent_signals_is_migrated(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "vault.db") as db:
        db.execute("CREATE TABLE suppressions (subject TEXT PRIMARY KEY, reason TEXT NOT NULL, at_ms INTEGER NOT NULL)")
        db.execute(
            "INSERT INTO suppressions VALUES ('profile:u1', 'list: bounced', 1), ('profile:u2', 'unsubscribed: x', 2)"
        )
    consent = Consent(tmp_path / "vault.db", SCRUB)
    assert consent.why("u1", None) == "list: bounced" and consent.why("u2", None) == "unsubscribed: x"
    consent.observe([Event("i", "identify", "u2", None, 3, 3, kind="identify", traits={"email_consent": True})])
    assert consent.why("u2", None) is None and len(consent) == 1  # the migrated signal gives way to a newer one


def test_traits_keep_their_latest_value_by_event_time_bounded_and_go_with_an_erasure(tmp_path: Path) -> None:
    people = People(tmp_path, SCRUB, VaultKeys.load(tmp_path / "vault.key"))
    parser = SegmentParser(SCRUB)

    def identify(at: int, traits: dict, user: str = "u1") -> Event:
        body = {"userId": user, "timestamp": format_ms(at), "traits": traits}
        [event] = parser.parse_payload(body, received_ms=1_700_000_900_000, kind="identify").events
        return event

    t0 = 1_700_000_000_000
    people.observe([identify(t0 + 2, {"plan": "gold", "email": "ann@example.com"})], [], lambda _: False)
    people.observe([identify(t0 + 1, {"plan": "free", "age": 41})], [], lambda _: False)  # late: older
    traits = people.export("u1")["traits"]
    assert traits["plan"] == "gold" and traits["age"] == "41" and traits["email"] == SCRUB("ann@example.com")
    many = {f"t{i}": i for i in range(300)}
    people.observe([identify(t0 + 3, many)], [], lambda _: False)
    assert len(people.traits.of("u1")) == 200 and people.traits.dropped == 103  # 3 names were kept already
    people.observe([identify(t0, {"plan": "x"}, "u2")], [], lambda pid: pid == "u2")  # erased: not kept
    assert people.traits.of("u2") == {}
    people.erase("u1", [])
    assert people.traits.of("u1") == {}
