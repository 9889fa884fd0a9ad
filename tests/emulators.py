"""Local emulators of the Klaviyo and Mailchimp APIs: real HTTP servers on
127.0.0.1 that implement the endpoints segflow uses with their auth headers,
body checks and error shapes, keep list and tag membership, record every
request, and fail on demand.

    with KlaviyoEmulator("pk_test", lists=["Xy12"]) as klaviyo:
        klaviyo.fail("POST /api/lists/", [429] * 2, retry_after=1)  # the next two such calls are throttled
        ... klaviyo.members("Xy12") ...

    with MailchimpEmulator("key-us6", audience="a1") as mailchimp:
        mailchimp.subscribe("bob@mail.com")
        ... mailchimp.tagged("vip") ...

Their fidelity is checked against the official SDKs (``klaviyo-api``,
``mailchimp-marketing``) in ``tests/test_destinations_platforms.py``. Used
by the tests and by ``make run``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

JSONAPI = "application/vnd.api+json"
KLAVIYO_REVISION = re.compile(r"\d{4}-\d{2}-\d{2}(\.\w+)?\Z")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


@dataclass
class Recorded:
    """One request as it arrived, and the status it was answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class _Failure:
    prefix: str
    statuses: list[int]
    retry_after: float | None


@dataclass
class Emulator:
    """What both emulators share: the server, the record, failures on demand."""

    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    delay_s: float = 0.0  # each request is answered this late (to see concurrency)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._failures: list[_Failure] = []
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                emulator._serve(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Emulator:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def fail(self, prefix: str, statuses: Sequence[int], retry_after: float | None = None) -> None:
        """Answer the next requests starting ``"METHOD /path"`` with these statuses, one each."""
        with self.lock:
            self._failures.append(_Failure(prefix, list(statuses), retry_after))

    def calls(self, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if f"{r.method} {r.path}".startswith(prefix)]

    # -- serving -------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        record = Recorded(handler.command, parts.path, parse_qs(parts.query), headers, body)
        with self.lock:
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failure = next((f for f in self._failures if f"{record.method} {record.path}".startswith(f.prefix)), None)
            if failure is not None:
                status = failure.statuses.pop(0)
                if not failure.statuses:
                    self._failures.remove(failure)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if failure is not None:
                extra = {"retry-after": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
                raise ApiError(status, "throttled" if status == 429 else "error", "failing on demand", extra)
            status, answer = self.handle(record)
            extra = {}
        except ApiError as exc:
            status, answer, extra = exc.status, self.error_body(exc, record), exc.headers
        finally:
            with self.lock:
                self.in_flight -= 1
        record.status = status
        out = b"" if answer is None else orjson.dumps(answer)
        try:
            handler.send_response(status)
            for k, v in extra.items():
                handler.send_header(k, v)
            if answer is not None:
                handler.send_header("content-type", self.content_type(status))
            handler.send_header("content-length", str(len(out)))
            handler.end_headers()
            handler.wfile.write(out)
        except OSError:
            pass

    def handle(self, request: Recorded) -> tuple[int, Any]:
        raise NotImplementedError

    def error_body(self, exc: ApiError, request: Recorded) -> Any:
        raise NotImplementedError

    def content_type(self, status: int) -> str:
        return "application/json"


Routes = list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any]]]]


def route(routes: Routes, request: Recorded) -> tuple[int, Any]:
    for method, pattern, handler in routes:
        m = pattern.fullmatch(request.path)
        if m and method == request.method:
            return handler(request, *m.groups())
    if any(p.fullmatch(request.path) for _, p, _ in routes):
        raise ApiError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
    raise ApiError(404, "not_found", f"no route {request.method} {request.path}")


def need(condition: bool, detail: str, status: int = 400, code: str = "invalid") -> None:
    if not condition:
        raise ApiError(status, code, detail)


def only(value: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """An object with no field the API does not define (the published request schema)."""
    need(isinstance(value, dict), f"{where} must be an object.")
    extra = sorted(set(value) - allowed)
    need(not extra, f"{where} has fields the API does not define: {extra}.")
    return dict(value)


PROFILE_FIELDS = {"email", "phone_number", "external_id", "_kx", "first_name", "last_name", "organization",
                  "locale", "title", "image", "location", "properties"}  # fmt: skip
EVENT_FIELDS = {"properties", "time", "value", "value_currency", "unique_id", "backfill", "metric", "profile"}


# -- Klaviyo ---------------------------------------------------------------------------------

E164 = re.compile(r"\+[1-9]\d{7,14}")


def check_phone(attributes: dict[str, Any]) -> None:
    phone = attributes.get("phone_number")
    need(phone is None or bool(E164.fullmatch(str(phone))), "Invalid phone number format (E.164 required).")


class KlaviyoEmulator(Emulator):
    """Klaviyo's REST API: profile import, list relationships, events,
    deletion jobs, list members and profile lookup."""

    def __init__(self, api_key: str, lists: Sequence[str] = ()) -> None:
        super().__init__()
        self.api_key = api_key
        self.profiles: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, list[str]] = {name: [] for name in lists}  # profile ids in order of addition
        self.events: list[dict[str, Any]] = []
        self.deletions: list[dict[str, Any]] = []
        self._seen_events: set[tuple[str, str, str]] = set()
        self._created = 0
        r = re.compile
        self.routes: Routes = [
            ("POST", r(r"/api/profile-import/?"), self._import),
            ("GET", r(r"/api/profiles/?"), self._profiles),
            ("POST", r(r"/api/lists/([^/]+)/relationships/profiles/?"), self._add),
            ("DELETE", r(r"/api/lists/([^/]+)/relationships/profiles/?"), self._remove),
            ("GET", r(r"/api/lists/([^/]+)/profiles/?"), self._list_profiles),
            ("POST", r(r"/api/events/?"), self._event),
            ("POST", r(r"/api/data-privacy-deletion-jobs/?"), self._delete),
        ]

    # what the tests read
    def members(self, list_id: str) -> set[str]:
        """The external ids of a list's members."""
        with self.lock:
            return {self.profiles[p]["external_id"] for p in self.lists[list_id]}

    def drift(self, list_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Change a list behind segflow's back (by external id)."""
        with self.lock:
            for ext in add:
                pid = self._find({"external_id": ext}) or self._create({"external_id": ext})
                if pid not in self.lists[list_id]:
                    self.lists[list_id].append(pid)
            gone = {p for p, v in self.profiles.items() if v.get("external_id") in set(remove)}
            self.lists[list_id] = [p for p in self.lists[list_id] if p not in gone]

    def content_type(self, status: int) -> str:
        return JSONAPI

    def error_body(self, exc: ApiError, request: Recorded) -> Any:
        return {"errors": [{"id": secrets.token_hex(8), "status": exc.status, "code": exc.code,
                            "title": exc.code.replace("_", " ").capitalize() + ".", "detail": exc.detail,
                            "source": {"pointer": "/data/"}}]}  # fmt: skip

    def handle(self, request: Recorded) -> tuple[int, Any]:
        auth = request.headers.get("authorization", "")
        need(auth == f"Klaviyo-API-Key {self.api_key}", "Missing or invalid private key.", 401, "not_authenticated")
        revision = request.headers.get("revision")
        need(revision is not None, "The revision header is required.", 400, "missing_revision")
        need(bool(KLAVIYO_REVISION.match(revision or "")), f"Invalid revision {revision!r}.", 400, "invalid_revision")
        if request.method in ("POST", "DELETE", "PATCH"):
            kind = request.headers.get("content-type", "").split(";")[0].strip()
            need(kind == JSONAPI, f"Unsupported media type {kind!r}.", 415, "unsupported_media_type")
            need(isinstance(request.body, dict) and "data" in request.body, "The body must be a JSON:API document.")
        with self.lock:
            return route(self.routes, request)

    def _find(self, attributes: dict[str, Any]) -> str | None:
        for name in ("email", "phone_number", "external_id"):
            value = attributes.get(name)
            if value:
                for pid, p in self.profiles.items():
                    if p.get(name) == value:
                        return pid
        return None

    def _create(self, attributes: dict[str, Any]) -> str:
        self._created += 1
        pid = f"01K{self._created:023X}"  # ids in order of creation: two emulators fed alike agree
        self.profiles[pid] = dict(attributes)
        return pid

    def _resource(self, pid: str) -> dict[str, Any]:
        return {"type": "profile", "id": pid, "attributes": dict(self.profiles[pid]),
                "links": {"self": f"{self.url}/api/profiles/{pid}/"}}  # fmt: skip

    def _import(self, request: Recorded) -> tuple[int, Any]:
        data = only(request.body["data"], {"type", "id", "attributes", "meta"}, "data")
        need(data.get("type") == "profile", "data.type must be 'profile'.")
        attributes = only(data.get("attributes"), PROFILE_FIELDS, "data.attributes")
        known = {k: v for k, v in attributes.items() if k in ("email", "phone_number", "external_id") and v}
        check_phone(attributes)
        need(bool(known), "One of email, phone_number or external_id is required.")
        pid = self._find(known)
        if pid is None:
            return 201, {"data": self._resource(self._create(attributes))}
        self.profiles[pid].update(attributes)
        return 200, {"data": self._resource(pid)}

    def _profiles(self, request: Recorded) -> tuple[int, Any]:
        wanted = request.query.get("filter", [""])[0]
        m = re.fullmatch(r'equals\((external_id|email|phone_number),"([^"]*)"\)', wanted)
        need(m is not None, f"Unsupported filter {wanted!r}.")
        assert m is not None
        found = [pid for pid, p in self.profiles.items() if p.get(m.group(1)) == m.group(2)]
        return 200, {"data": [self._resource(pid) for pid in found], "links": {"self": request.path, "next": None}}

    def _linkage(self, request: Recorded, list_id: str) -> list[str]:
        need(list_id in self.lists, f"A list with id {list_id} does not exist.", 404, "not_found")
        data = request.body["data"]
        need(isinstance(data, list) and len(data) > 0, "data must be a non-empty list of profiles.")
        need(len(data) <= 1000, f"At most 1000 profiles per call, got {len(data)}.")
        for item in data:
            need(only(item, {"type", "id"}, "data[]").get("type") == "profile", "Each item's type must be 'profile'.")
            need(
                item.get("id") in self.profiles, f"A profile with id {item.get('id')} does not exist.", 404, "not_found"
            )
        return [item["id"] for item in data]

    def _add(self, request: Recorded, list_id: str) -> tuple[int, Any]:
        for pid in self._linkage(request, list_id):
            if pid not in self.lists[list_id]:
                self.lists[list_id].append(pid)
        return 204, None

    def _remove(self, request: Recorded, list_id: str) -> tuple[int, Any]:
        gone = set(self._linkage(request, list_id))
        self.lists[list_id] = [p for p in self.lists[list_id] if p not in gone]
        return 204, None

    def _list_profiles(self, request: Recorded, list_id: str) -> tuple[int, Any]:
        need(list_id in self.lists, f"A list with id {list_id} does not exist.", 404, "not_found")
        size = int(request.query.get("page[size]", ["20"])[0])
        need(1 <= size <= 100, "page[size] must be between 1 and 100.")
        start = int(request.query.get("page[cursor]", ["0"])[0])
        page = self.lists[list_id][start : start + size]
        following = start + size if start + size < len(self.lists[list_id]) else None
        link = (
            None
            if following is None
            else f"{self.url}/api/lists/{list_id}/profiles?page[size]={size}&page[cursor]={following}"
        )
        return 200, {"data": [self._resource(p) for p in page], "links": {"self": request.path, "next": link}}

    def _event(self, request: Recorded) -> tuple[int, Any]:
        data = only(request.body["data"], {"type", "attributes"}, "data")
        need(data.get("type") == "event", "data.type must be 'event'.")
        a = only(data.get("attributes"), EVENT_FIELDS, "data.attributes")
        only(only(a.get("metric"), {"data"}, "metric").get("data"), {"type", "attributes"}, "metric.data")
        wrapped = only(a.get("profile"), {"data"}, "profile").get("data")
        event_profile = only(wrapped, {"type", "id", "attributes", "meta"}, "profile.data")
        only(event_profile.get("attributes"), PROFILE_FIELDS | {"anonymous_id"}, "profile.data.attributes")
        need(isinstance(a.get("properties"), dict), "data.attributes.properties is required.")
        metric = ((a.get("metric") or {}).get("data") or {}).get("attributes", {}).get("name")
        need(isinstance(metric, str) and bool(metric), "data.attributes.metric.data.attributes.name is required.")
        profile = (a.get("profile") or {}).get("data") or {}
        need(profile.get("type") == "profile" and isinstance(profile.get("attributes"), dict),
             "data.attributes.profile.data must be a profile with attributes.")  # fmt: skip
        attributes = profile["attributes"]
        check_phone(attributes)
        pid = self._find(attributes) or self._create(attributes)
        unique = str(a.get("unique_id") or a.get("time") or "")
        if (pid, metric, unique) not in self._seen_events:  # Klaviyo keeps the first of a repeated unique_id
            self._seen_events.add((pid, metric, unique))
            self.events.append({"profile": pid, "external_id": self.profiles[pid].get("external_id"),
                                "metric": metric, "unique_id": unique, "properties": a["properties"]})  # fmt: skip
        return 202, None

    def _delete(self, request: Recorded) -> tuple[int, Any]:
        data = only(request.body["data"], {"type", "attributes"}, "data")
        need(data.get("type") == "data-privacy-deletion-job", "data.type must be 'data-privacy-deletion-job'.")
        wrapper = only(only(data.get("attributes"), {"profile"}, "data.attributes").get("profile"), {"data"}, "profile")
        profile = only(wrapper.get("data"), {"type", "id", "attributes"}, "profile.data")
        only(profile.get("attributes") or {}, {"email", "phone_number"}, "profile.data.attributes")
        need(profile.get("type") == "profile", "data.attributes.profile.data.type must be 'profile'.")
        given = [k for k, v in (profile.get("attributes") or {}).items() if v] + (["id"] if profile.get("id") else [])
        need(len(given) == 1, f"Exactly one identifier is required (email, phone_number or id), got {given}.")
        pid = profile.get("id") or self._find(profile.get("attributes") or {})
        self.deletions.append(
            {"profile": pid, "by": "id" if profile.get("id") else sorted(profile.get("attributes", {}))}
        )
        if pid in self.profiles:
            del self.profiles[pid]
            for members in self.lists.values():
                if pid in members:
                    members.remove(pid)
        return 202, None


# -- Mailchimp -------------------------------------------------------------------------------


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


class MailchimpEmulator(Emulator):
    """Mailchimp's Marketing API 3.0: member tags, tag search, a tag's members,
    permanent deletion. One audience; members are added by :meth:`subscribe`."""

    def __init__(self, api_key: str, audience: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.audience = audience
        self.members: dict[str, dict[str, Any]] = {}  # subscriber hash -> member
        self.tag_ids: dict[str, int] = {}
        self.deleted: list[str] = []
        self.tag_changes: Counter[str] = Counter()  # "tag:active" / "tag:inactive"
        r = re.compile
        base = rf"/3\.0/lists/{re.escape(audience)}"
        self.routes: Routes = [
            ("POST", r(base + r"/members/([0-9a-f]{32})/tags"), self._tags),
            ("GET", r(base + r"/tag-search"), self._tag_search),
            ("GET", r(base + r"/segments/(\d+)/members"), self._segment_members),
            ("POST", r(base + r"/members/([0-9a-f]{32})/actions/delete-permanent"), self._delete),
        ]

    def subscribe(self, email: str, status: str = "subscribed") -> str:
        with self.lock:
            h = subscriber_hash(email)
            self.members[h] = {"id": h, "email_address": email, "status": status, "tags": set()}
            return h

    def tagged(self, tag: str) -> set[str]:
        """The email addresses carrying a tag."""
        with self.lock:
            return {m["email_address"] for m in self.members.values() if tag in m["tags"]}

    def drift(self, tag: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Change a tag behind segflow's back (by email address of existing members)."""
        with self.lock:
            self.tag_ids.setdefault(tag, 1000 + len(self.tag_ids))
            for email in add:
                self.members[subscriber_hash(email)]["tags"].add(tag)
            for email in remove:
                self.members[subscriber_hash(email)]["tags"].discard(tag)

    def error_body(self, exc: ApiError, request: Recorded) -> Any:
        titles = {400: "Invalid Resource", 401: "API Key Invalid", 404: "Resource Not Found", 405: "Method Not Allowed",
                  429: "Too Many Requests"}  # fmt: skip
        return {"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                "title": titles.get(exc.status, "Internal Server Error"), "status": exc.status, "detail": exc.detail,
                "instance": secrets.token_hex(16)}  # fmt: skip

    def content_type(self, status: int) -> str:
        return "application/json" if status < 400 else "application/problem+json"

    def handle(self, request: Recorded) -> tuple[int, Any]:
        auth = request.headers.get("authorization", "")
        ok = False
        if auth.startswith("Basic "):
            _, _, password = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
            ok = password == self.api_key
        elif auth.startswith("Bearer "):
            ok = auth[7:] == self.api_key
        need(ok, "Your API key may be invalid, or you've attempted to access the wrong datacenter.", 401)
        with self.lock:
            return route(self.routes, request)

    def _tags(self, request: Recorded, h: str) -> tuple[int, Any]:
        body = only(request.body, {"tags", "is_syncing"}, "body")
        need(isinstance(body.get("tags"), list), "The tags list is required.")
        for t in body["tags"]:
            only(t, {"name", "status"}, "tags[]")
            need(isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("status") in ("active", "inactive"),
                 "Each tag needs a name and a status of active or inactive.")  # fmt: skip
        need("is_syncing" not in body or isinstance(body["is_syncing"], bool), "is_syncing must be a boolean.")
        member = self.members.get(h)
        need(member is not None, "The requested resource could not be found.", 404)
        assert member is not None
        for t in body["tags"]:
            self.tag_changes[f"{t['name']}:{t['status']}"] += 1
            if t["status"] == "active":
                self.tag_ids.setdefault(t["name"], 1000 + len(self.tag_ids))
                member["tags"].add(t["name"])
            else:
                member["tags"].discard(t["name"])
        return 204, None

    def _tag_search(self, request: Recorded) -> tuple[int, Any]:
        name = request.query.get("name", [""])[0]
        found = [{"id": i, "name": n} for n, i in self.tag_ids.items() if name.lower() in n.lower()]
        return 200, {"tags": found, "total_items": len(found)}

    def _segment_members(self, request: Recorded, segment_id: str) -> tuple[int, Any]:
        names = [n for n, i in self.tag_ids.items() if i == int(segment_id)]
        need(bool(names), "The requested resource could not be found.", 404)
        count = int(request.query.get("count", ["10"])[0])
        need(1 <= count <= 1000, "count must be between 1 and 1000.")
        offset = int(request.query.get("offset", ["0"])[0])
        shown = {"subscribed", "pending"} | {
            status for status in ("cleaned", "transactional", "unsubscribed")
            if request.query.get(f"include_{status}", ["false"])[0].lower() == "true"
        }  # fmt: skip
        members = sorted(
            (m for m in self.members.values() if names[0] in m["tags"] and m["status"] in shown), key=lambda m: m["id"]
        )
        page = [{"id": m["id"], "email_address": m["email_address"], "status": m["status"]}
                for m in members[offset : offset + count]]  # fmt: skip
        return 200, {"members": page, "total_items": len(members)}

    def _delete(self, request: Recorded, h: str) -> tuple[int, Any]:
        need(h in self.members, "The requested resource could not be found.", 404)
        del self.members[h]
        self.deleted.append(h)
        return 204, None
