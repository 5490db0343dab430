"""surge app: the bad-input corpus, one table row per request.

Every row is (id, method, path, headers, body, expected status). The answer
must have exactly that status (a tuple where the contract, docs/contract.md, leaves a choice) and, for
every 4xx, a JSON object {"error": "<non-empty string>"} as body; 405 also needs
an Allow header. After every row the process must still be alive and answer
/healthz: malformed input is never a 500 and never a crash.

One `surge app` (with --max-body 65536, the default) serves the whole module;
"{SID}" in a header value is replaced by a logged-in session id, "{ADMIN}" by
the admin token, "{ORDER}" in a path by an order of that session's user.
Products 1..60 are seeded; product 59 has stock 5, product 60 one unit sold.
Bodies given as dict/list are sent as JSON, str/bytes as they are.
"""
import json

import pytest

from harness import RawConn, build_request

ADMIN_TOKEN = "test-admin-token"   # what start_app passes as --admin-token
JSON = ("Content-Type", "application/json")
SESSION = ("Cookie", "sid={SID}")
ADMIN = ("Authorization", "Bearer {ADMIN}")
DEEP = b"[" * 30000 + b"]" * 30000              # under --max-body: parsed, not stored
DEEP_OBJ = b'{"a":' * 10000 + b"1" + b"}" * 10000


def user(**over):
    body = {"email": "new@example.com", "password": "correct horse", "name": "New"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


def order(*items):
    return {"items": list(items)}


def item(pid=1, qty=1):
    return {"product_id": pid, "quantity": qty}


PRODUCT = {"name": "Widget", "price_cents": 500, "stock": 3}


def prod(**over):
    body = dict(PRODUCT)
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


ROWS = [
    # ---- POST /api/users: malformed JSON and non-objects
    ("users_truncated_json", "POST", "/api/users", [JSON], b'{"email": "a@b.c", "pass', 400),
    ("users_bare_brace", "POST", "/api/users", [JSON], b"{", 400),
    ("users_empty_body", "POST", "/api/users", [JSON], b"", 400),
    ("users_no_body", "POST", "/api/users", [JSON], None, 400),
    ("users_array", "POST", "/api/users", [JSON], b"[]", 400),
    ("users_string", "POST", "/api/users", [JSON], b'"hello"', 400),
    ("users_number", "POST", "/api/users", [JSON], b"42", 400),
    ("users_null", "POST", "/api/users", [JSON], b"null", 400),
    ("users_trailing_garbage", "POST", "/api/users", [JSON],
     json.dumps(user()).encode() + b" xyz", 400),
    ("users_two_objects", "POST", "/api/users", [JSON], b"{}{}", 400),
    ("users_single_quotes", "POST", "/api/users", [JSON],
     b"{'email':'a@example.com','password':'correct horse','name':'A'}", 400),
    ("users_deep_array", "POST", "/api/users", [JSON], DEEP, 400),
    ("users_deep_object", "POST", "/api/users", [JSON], DEEP_OBJ, 400),
    ("users_binary", "POST", "/api/users", [JSON], bytes(range(256)), 400),
    ("users_nul_in_json", "POST", "/api/users", [JSON], b'{"email":"a\x00@example.com"}', 400),
    # ---- POST /api/users: fields
    ("users_missing_email", "POST", "/api/users", [JSON], user(email=...), 400),
    ("users_missing_password", "POST", "/api/users", [JSON], user(password=...), 400),
    ("users_missing_name", "POST", "/api/users", [JSON], user(name=...), 400),
    ("users_email_number", "POST", "/api/users", [JSON], user(email=12345), 400),
    ("users_email_null", "POST", "/api/users", [JSON], user(email=None), 400),
    ("users_email_array", "POST", "/api/users", [JSON], user(email=["a@example.com"]), 400),
    ("users_email_object", "POST", "/api/users", [JSON], user(email={"a": 1}), 400),
    ("users_email_no_at", "POST", "/api/users", [JSON], user(email="not-an-email"), 400),
    ("users_email_empty", "POST", "/api/users", [JSON], user(email=""), 400),
    ("users_email_only_at", "POST", "/api/users", [JSON], user(email="@"), 400),
    ("users_email_no_domain", "POST", "/api/users", [JSON], user(email="a@"), 400),
    ("users_email_no_local", "POST", "/api/users", [JSON], user(email="@example.com"), 400),
    ("users_email_spaces", "POST", "/api/users", [JSON], user(email="a b@example.com"), 400),
    ("users_email_nul", "POST", "/api/users", [JSON], user(email="a\u0000b@example.com"), 400),
    ("users_email_10k", "POST", "/api/users", [JSON], user(email="a" * 10000 + "@example.com"), 400),
    ("users_password_7", "POST", "/api/users", [JSON], user(password="1234567"), 400),
    ("users_password_empty", "POST", "/api/users", [JSON], user(password=""), 400),
    ("users_password_number", "POST", "/api/users", [JSON], user(password=12345678), 400),
    ("users_password_true", "POST", "/api/users", [JSON], user(password=True), 400),
    ("users_name_empty", "POST", "/api/users", [JSON], user(name=""), 400),
    ("users_name_101", "POST", "/api/users", [JSON], user(name="n" * 101), 400),
    ("users_name_50k", "POST", "/api/users", [JSON], user(name="n" * 50000), 400),
    ("users_name_number", "POST", "/api/users", [JSON], user(name=7), 400),
    ("users_name_null", "POST", "/api/users", [JSON], user(name=None), 400),
    ("users_all_wrong_types", "POST", "/api/users", [JSON],
     {"email": 1, "password": [], "name": {}}, 400),
    ("users_sql_email", "POST", "/api/users", [JSON],
     user(email="x' OR '1'='1"), 400),
    ("users_too_large_declared", "POST", "/api/users",
     [JSON, ("Content-Length", "70000")], "DECLARED_ONLY", 413),
    ("users_too_large_sent", "POST", "/api/users", [JSON],
     json.dumps(user(name="n" * 70000)).encode(), 413),
    # ---- POST /api/sessions
    ("sessions_bad_json", "POST", "/api/sessions", [JSON], b"{", 400),
    ("sessions_array", "POST", "/api/sessions", [JSON], b"[1,2]", 400),
    ("sessions_empty_body", "POST", "/api/sessions", [JSON], b"", 400),
    ("sessions_missing_password", "POST", "/api/sessions", [JSON],
     {"email": "someone@example.com"}, 400),
    ("sessions_missing_email", "POST", "/api/sessions", [JSON], {"password": "whatever1"}, 400),
    ("sessions_password_number", "POST", "/api/sessions", [JSON],
     {"email": "someone@example.com", "password": 12345678}, 400),
    ("sessions_sql_email", "POST", "/api/sessions", [JSON],
     {"email": "' OR 1=1 --", "password": "whatever1"}, (400, 401)),
    ("sessions_huge_password", "POST", "/api/sessions", [JSON],
     {"email": "someone@example.com", "password": "p" * 60000}, (400, 401)),
    # ---- GET /api/me and cookies
    ("me_empty_sid", "GET", "/api/me", [("Cookie", "sid=")], None, 401),
    ("me_short_sid", "GET", "/api/me", [("Cookie", "sid=abc")], None, 401),
    ("me_nonhex_sid", "GET", "/api/me", [("Cookie", "sid=" + "z" * 64)], None, 401),
    ("me_sql_sid", "GET", "/api/me", [("Cookie", "sid=' OR '1'='1")], None, 401),
    ("me_long_sid", "GET", "/api/me", [("Cookie", "sid=" + "a" * 4000)], None, 401),
    ("me_uppercase_sid", "GET", "/api/me", [("Cookie", "sid={SID_UPPER}")], None, 401),
    ("me_garbage_cookie", "GET", "/api/me", [("Cookie", ";;;==;sid;=")], None, 401),
    # ---- users by id
    ("user_id_text", "GET", "/api/users/abc", [], None, 400),
    ("user_id_float", "GET", "/api/users/1.5", [], None, 400),
    ("user_id_sql", "GET", "/api/users/1%20OR%201=1", [], None, 400),
    ("user_id_zero", "GET", "/api/users/0", [], None, 404),
    ("user_id_huge", "GET", "/api/users/99999999999999999999999", [], None, (400, 404)),
    ("user_id_negative", "GET", "/api/users/-1", [], None, (400, 404)),
    # ---- products: reads
    ("product_id_text", "GET", "/api/products/abc", [], None, 400),
    ("product_id_mixed", "GET", "/api/products/1abc", [], None, 400),
    ("product_id_float", "GET", "/api/products/1.0", [], None, 400),
    ("product_id_hex", "GET", "/api/products/0x1", [], None, 400),
    ("product_id_zero", "GET", "/api/products/0", [], None, 404),
    ("product_id_unknown", "GET", "/api/products/424242", [], None, 404),
    ("product_id_huge", "GET", "/api/products/99999999999999999999999", [], None, (400, 404)),
    ("product_id_negative", "GET", "/api/products/-1", [], None, (400, 404)),
    ("product_id_sql", "GET", "/api/products/1;DROP%20TABLE%20products", [], None, 400),
    ("list_limit_zero", "GET", "/api/products?limit=0", [], None, 400),
    ("list_limit_101", "GET", "/api/products?limit=101", [], None, 400),
    ("list_limit_negative", "GET", "/api/products?limit=-5", [], None, 400),
    ("list_limit_text", "GET", "/api/products?limit=ten", [], None, 400),
    ("list_limit_empty", "GET", "/api/products?limit=", [], None, 400),
    ("list_limit_huge", "GET", "/api/products?limit=99999999999999999999", [], None, 400),
    ("list_after_text", "GET", "/api/products?after=abc", [], None, 400),
    ("list_after_sql", "GET", "/api/products?after=1%20OR%201=1", [], None, 400),
    ("views_unknown_product", "POST", "/api/products/424242/views", [], None, 404),
    ("views_text_id", "POST", "/api/products/abc/views", [], None, 400),
    # ---- products: admin writes
    ("create_no_auth", "POST", "/api/products", [JSON], PRODUCT, 401),
    ("create_wrong_token", "POST", "/api/products", [JSON, ("Authorization", "Bearer nope")],
     PRODUCT, 403),
    ("create_empty_bearer", "POST", "/api/products", [JSON, ("Authorization", "Bearer ")],
     PRODUCT, (401, 403)),
    ("create_basic_auth", "POST", "/api/products",
     [JSON, ("Authorization", "Basic dGVzdDp0ZXN0")], PRODUCT, (401, 403)),
    ("create_huge_token", "POST", "/api/products",
     [JSON, ("Authorization", "Bearer " + "t" * 5000)], PRODUCT, 403),
    ("create_bad_json", "POST", "/api/products", [JSON, ADMIN], b"{", 400),
    ("create_array", "POST", "/api/products", [JSON, ADMIN], b"[]", 400),
    ("create_missing_name", "POST", "/api/products", [JSON, ADMIN], prod(name=...), 400),
    ("create_missing_price", "POST", "/api/products", [JSON, ADMIN], prod(price_cents=...), 400),
    ("create_missing_stock", "POST", "/api/products", [JSON, ADMIN], prod(stock=...), 400),
    ("create_name_empty", "POST", "/api/products", [JSON, ADMIN], prod(name=""), 400),
    ("create_name_number", "POST", "/api/products", [JSON, ADMIN], prod(name=1), 400),
    ("create_name_50k", "POST", "/api/products", [JSON, ADMIN], prod(name="w" * 50000), 400),
    ("create_price_negative", "POST", "/api/products", [JSON, ADMIN], prod(price_cents=-1), 400),
    ("create_price_string", "POST", "/api/products", [JSON, ADMIN], prod(price_cents="500"), 400),
    ("create_price_float", "POST", "/api/products", [JSON, ADMIN], prod(price_cents=5.5), 400),
    ("create_price_huge", "POST", "/api/products", [JSON, ADMIN], prod(price_cents=1e30), 400),
    ("create_price_null", "POST", "/api/products", [JSON, ADMIN], prod(price_cents=None), 400),
    ("create_stock_negative", "POST", "/api/products", [JSON, ADMIN], prod(stock=-3), 400),
    ("create_stock_bool", "POST", "/api/products", [JSON, ADMIN], prod(stock=True), 400),
    ("create_stock_huge", "POST", "/api/products", [JSON, ADMIN], prod(stock=1e30), 400),
    ("update_no_auth", "PUT", "/api/products/1", [JSON], {"stock": 5}, 401),
    ("update_wrong_token", "PUT", "/api/products/1", [JSON, ("Authorization", "Bearer x")],
     {"stock": 5}, 403),
    ("update_text_id", "PUT", "/api/products/abc", [JSON, ADMIN], {"stock": 5}, 400),
    ("update_unknown_id", "PUT", "/api/products/424242", [JSON, ADMIN], {"stock": 5}, 404),
    ("update_bad_json", "PUT", "/api/products/1", [JSON, ADMIN], b"{\"stock\":", 400),
    ("update_array", "PUT", "/api/products/1", [JSON, ADMIN], b"[]", 400),
    ("update_stock_string", "PUT", "/api/products/1", [JSON, ADMIN], {"stock": "5"}, 400),
    ("update_price_negative", "PUT", "/api/products/1", [JSON, ADMIN], {"price_cents": -10}, 400),
    ("update_name_empty", "PUT", "/api/products/1", [JSON, ADMIN], {"name": ""}, 400),
    ("update_empty_object", "PUT", "/api/products/1", [JSON, ADMIN], {}, (200, 400)),
    # ---- orders
    ("order_no_session", "POST", "/api/orders", [JSON], order(item()), 401),
    ("order_bad_session", "POST", "/api/orders", [JSON, ("Cookie", "sid=" + "0" * 64)],
     order(item()), 401),
    ("order_bad_json", "POST", "/api/orders", [JSON, SESSION], b"{\"items\":[", 400),
    ("order_not_object", "POST", "/api/orders", [JSON, SESSION], b"[]", 400),
    ("order_empty_object", "POST", "/api/orders", [JSON, SESSION], {}, 400),
    ("order_items_null", "POST", "/api/orders", [JSON, SESSION], {"items": None}, 400),
    ("order_items_object", "POST", "/api/orders", [JSON, SESSION], {"items": item()}, 400),
    ("order_items_string", "POST", "/api/orders", [JSON, SESSION], {"items": "1"}, 400),
    ("order_items_empty", "POST", "/api/orders", [JSON, SESSION], order(), 400),
    ("order_items_51", "POST", "/api/orders", [JSON, SESSION],
     order(*[item(i) for i in range(1, 52)]), 400),
    ("order_item_number", "POST", "/api/orders", [JSON, SESSION], {"items": [1]}, 400),
    ("order_item_null", "POST", "/api/orders", [JSON, SESSION], {"items": [None]}, 400),
    ("order_qty_zero", "POST", "/api/orders", [JSON, SESSION], order(item(1, 0)), 400),
    ("order_qty_negative", "POST", "/api/orders", [JSON, SESSION], order(item(1, -1)), 400),
    ("order_qty_1001", "POST", "/api/orders", [JSON, SESSION], order(item(1, 1001)), 400),
    ("order_qty_string", "POST", "/api/orders", [JSON, SESSION],
     order({"product_id": 1, "quantity": "1"}), 400),
    ("order_qty_float", "POST", "/api/orders", [JSON, SESSION], order(item(1, 1.5)), 400),
    ("order_qty_huge", "POST", "/api/orders", [JSON, SESSION], order(item(1, 1e30)), 400),
    ("order_qty_missing", "POST", "/api/orders", [JSON, SESSION], order({"product_id": 1}), 400),
    ("order_pid_missing", "POST", "/api/orders", [JSON, SESSION], order({"quantity": 1}), 400),
    ("order_pid_string", "POST", "/api/orders", [JSON, SESSION],
     order({"product_id": "1", "quantity": 1}), 400),
    ("order_pid_float", "POST", "/api/orders", [JSON, SESSION],
     order({"product_id": 1.5, "quantity": 1}), 400),
    ("order_pid_sql", "POST", "/api/orders", [JSON, SESSION],
     order({"product_id": "1; DELETE FROM products", "quantity": 1}), 400),
    ("order_duplicate_pid", "POST", "/api/orders", [JSON, SESSION],
     order(item(1, 1), item(2, 1), item(1, 2)), 400),
    ("order_unknown_pid", "POST", "/api/orders", [JSON, SESSION], order(item(424242, 1)), 404),
    ("order_more_than_stock", "POST", "/api/orders", [JSON, SESSION], order(item(59, 6)), 409),
    ("order_partly_out_of_stock", "POST", "/api/orders", [JSON, SESSION],
     order(item(1, 1), item(59, 6)), 409),
    ("order_get_text_id", "GET", "/api/orders/abc", [SESSION], None, 400),
    ("order_get_unknown", "GET", "/api/orders/424242", [SESSION], None, 404),
    ("order_get_no_session", "GET", "/api/orders/{ORDER}", [], None, 401),
    ("orders_no_session", "GET", "/api/orders", [], None, 401),
    # ---- HTTP framing and headers (surge's own HTTP server layer)
    ("hdr_content_length_text", "POST", "/api/users", [JSON, ("Content-Length", "abc")],
     "DECLARED_ONLY", 400),
    ("hdr_content_length_negative", "POST", "/api/users", [JSON, ("Content-Length", "-1")],
     "DECLARED_ONLY", 400),
    ("hdr_two_content_lengths", "POST", "/api/users",
     [JSON, ("Content-Length", "5"), ("Content-Length", "6")], "DECLARED_ONLY", 400),
    ("hdr_cl_and_te", "POST", "/api/users",
     [JSON, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")], "DECLARED_ONLY",
     (400, 411)),
    ("hdr_huge_cookie", "GET", "/api/me", [("Cookie", "a=" + "b" * 100000)], None,
     (400, 431)),
    ("hdr_many_headers", "GET", "/api/products/1",
     [("X-Junk-%d" % i, "v") for i in range(300)], None, (200, 431)),
    ("hdr_content_type_text", "POST", "/api/users", [("Content-Type", "text/plain")],
     user(email="ctype@example.com"), (201, 400, 415)),
    ("req_unknown_method", "FOO", "/api/products", [], None, (400, 405, 501)),
    ("req_absolute_form", "GET", "http://x/api/products/1", [], None, (200, 400)),
    ("req_bad_percent", "GET", "/api/products/%FF", [], None, (400, 404)),
    ("req_query_on_item", "GET", "/api/products/1?x=1", [], None, 200),
    ("req_trailing_slash", "GET", "/api/products/1/", [], None, (200, 404)),
    ("req_double_slash", "GET", "//api/products/1", [], None, (200, 404)),
    ("req_repeated_limit", "GET", "/api/products?limit=5&limit=6", [], None, (200, 400)),
    # ---- routing
    ("unknown_root", "GET", "/", [], None, 404),
    ("unknown_path", "GET", "/nope", [], None, 404),
    ("unknown_api", "GET", "/api", [], None, 404),
    ("unknown_sub", "GET", "/api/products/1/nope", [], None, 404),
    ("unknown_traversal", "GET", "/api/../etc/passwd", [], None, (400, 404)),
    ("unknown_long_path", "GET", "/api/" + "x" * 4000, [], None, (404, 414, 431)),
    ("method_products_delete", "DELETE", "/api/products", [], None, 405),
    ("method_product_delete", "DELETE", "/api/products/1", [], None, 405),
    ("method_me_post", "POST", "/api/me", [JSON], {}, 405),
    ("method_users_get", "GET", "/api/users", [], None, 405),
    ("method_sessions_get", "GET", "/api/sessions", [], None, 405),
    ("method_views_get", "GET", "/api/products/1/views", [], None, 405),
    ("method_orders_put", "PUT", "/api/orders", [JSON], {}, 405),
    ("method_healthz_post", "POST", "/healthz", [], b"", 405),
    ("method_weird", "PATCH", "/api/products/1", [JSON, ADMIN], {"stock": 1}, 405),
]

ids = [r[0] for r in ROWS]
assert len(ids) == len(set(ids)), "duplicate row ids"


@pytest.fixture(scope="module")
def ctx(module_apps, tmp_path_factory):
    data = tmp_path_factory.mktemp("badinput") / "data"
    module_apps.seed(data, products=60)
    app = module_apps.start(data_dir=data)
    resp = app.post("/api/users", {"email": "bad@example.com", "password": "correct horse",
                                   "name": "Bad"})
    assert resp.status == 201, resp
    resp = app.post("/api/sessions", {"email": "bad@example.com", "password": "correct horse"})
    assert resp.status == 201, resp
    sid = resp.header("Set-Cookie").split(";")[0].split("=", 1)[1]
    resp = app.put("/api/products/59", {"stock": 5},
                   headers=[("Authorization", "Bearer " + ADMIN_TOKEN)])
    assert resp.status == 200, resp
    resp = app.post("/api/orders", {"items": [{"product_id": 60, "quantity": 1}]},
                    headers=[("Cookie", "sid=" + sid)])
    assert resp.status == 201, resp
    return {"app": app, "sid": sid, "order": resp.json()["id"]}


def fill(text, c):
    return (text.replace("{SID_UPPER}", c["sid"].upper()).replace("{SID}", c["sid"])
            .replace("{ADMIN}", ADMIN_TOKEN).replace("{ORDER}", str(c["order"])))


@pytest.mark.parametrize("method,path,headers,body,expected",
                         [r[1:] for r in ROWS], ids=ids)
def test_bad_input(ctx, method, path, headers, body, expected):
    app = ctx["app"]
    assert app.alive(), "surge app is no longer running (an earlier row crashed it?)"
    headers = [(k, fill(v, ctx)) for k, v in headers]
    path = fill(path, ctx)
    declared_only = body == "DECLARED_ONLY"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif declared_only:
        body = None          # Content-Length is in the headers; the body is never sent
    elif isinstance(body, str):
        body = body.encode()
    with RawConn(app.port) as c:
        c.send(build_request(method, path, headers, body, host=c.host), tolerate_reset=True)
        resp = c.read_response(method)
    want = expected if isinstance(expected, tuple) else (expected,)
    assert resp.status in want, "want %s, got %r" % ("/".join(map(str, want)), resp)
    if resp.status >= 400:
        try:
            doc = json.loads(resp.body)
        except ValueError:
            raise AssertionError("error body is not JSON: %r" % (resp,))
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], resp
        assert "application/json" in (resp.header("Content-Type") or ""), resp
        leaked = [w for w in ("sqlite", "SQL logic", "syntax error", "constraint failed", ".c:")
                  if w.lower() in doc["error"].lower()]
        assert not leaked, "the error message shows internals (%s): %r" % (leaked, resp)
    if resp.status == 405:
        assert resp.header("Allow"), "405 without an Allow header: %r" % resp
        assert method not in {t.upper() for t in resp.header_tokens("Allow")}, resp
    # still alive and well
    health = RawConn(app.port)
    with health:
        assert health.request("GET", "/healthz").status == 200


def test_nothing_changed_after_the_corpus(ctx):
    """The rows above never created a user, product or order, or changed stock
    (update_empty_object may answer 200 without changing anything)."""
    app = ctx["app"]
    sid_hdr = [("Cookie", "sid=" + ctx["sid"])]
    orders = app.get("/api/orders", headers=sid_hdr).json()["items"]
    assert [o["id"] for o in orders] == [ctx["order"]], orders
    page = app.get("/api/products?limit=100").json()
    assert [p["id"] for p in page["items"]] == list(range(1, 61)), page
    want = {59: 5, 60: 999}
    changed = [p for p in page["items"] if p["stock"] != want.get(p["id"], 1000)]
    assert not changed, changed
    resp = app.post("/api/sessions", {"email": "new@example.com", "password": "correct horse"})
    assert resp.status in (401, 429), "a bad-input row created new@example.com: %r" % resp
