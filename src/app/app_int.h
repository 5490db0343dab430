/* Internals shared by the app's files: statement numbers, the per-thread
 * context, the job that carries a request to a worker thread. */
#ifndef SURGE_APP_APP_INT_H
#define SURGE_APP_APP_INT_H
#include "base/trace.h"
#include "app/app.h"
#include "data/store_async.h"

/* Catalog statements (app_sql_catalog). */
enum {
    P_GET,
    P_LIST,
    P_INSERT,
    P_INSERT_SEED,
    P_UPDATE,
    P_TAKE,
    P_GIVE,
    P_VIEWS,
    P_PING,
    P_MAX_ID,
    P_RESERVE,
    P_UNRESERVE,
    P_COUNT
};
/* Directory statements. */
enum { D_INSERT, D_INSERT_SEED, D_BY_EMAIL, D_DELETE, D_META_GET, D_META_SET, D_COUNT };
/* Shard statements. */
enum {
    S_USER_INSERT,
    S_USER_INSERT_SEED,
    S_USER_GET,
    S_ORDER_BY_KEY,
    S_ORDER_INSERT,
    S_ITEM_INSERT,
    S_ORDERS_LIST,
    S_ORDER_GET,
    S_ORDER_ITEMS,
    S_COUNT
};

/* An order is written at most this long after its stock was reserved; the
 * worker's --reservation-timeout must be longer (docs/app.md). */
#define APP_RESERVATION_GUARD_MS 30000

/* Public order ids carry their shard: id = local_id * 64 + shard. */
#define ORDER_ID_SHARDS 64

/* A worker thread's context. */
struct app_thread {
    struct app *a;
    struct store_conns conns;
    struct session_conn *sess;
    struct store_rows rows, rows2;
    char sess_hash[65]; /* the request's session (session_user), "" when none */
};

struct app_job;
typedef void (*app_handler)(struct app_job *j, struct app_thread *t);

/* One request's trip to a worker thread and back. */
struct app_job {
    struct workq_job job;
    struct app *a;
    struct http_request *req;
    struct http_response resp;
    enum app_route route;
    app_handler handler;
    char query[1024];       /* after the ?, NUL-terminated */
    int64_t id;             /* the {id} of the path, when the route has one */
    char ip[64];            /* the client's address (app_client_ip), set on the loop */
    struct trace_ctx trace; /* this request's span: a child of the gateway's */
    /* A handler may set next: the job then goes on to a second stage
     * instead of being answered (signup: store checks, then the hash). */
    app_handler next;
    /* The product page: its statement's arguments (app_products_args),
     * and its read when it runs on the loop (app.c, store_async.h). */
    long long limit;
    struct store_val args[2];
    struct store_async_req areq;
    /* The session, when the loop looked it up before the hop (a driver
     * with lookup_async): valid (errors were answered on the loop), its
     * user, hash and read fence (malloc'd; NULL when none was asked). */
    int sess_looked_up;
    int64_t sess_uid;
    char sess_hash[65];
    char *sess_fence;
};

/* The client's address for limits: the TCP peer, or, when the peer is a
 * trusted proxy, the right-most X-Forwarded-For entry (the one that proxy
 * appended; see app_xff_client). Loop thread or any thread. */
void app_client_ip(const struct app *a, const struct http_request *req, char *out, size_t outlen);

/* The hash of the request's sid cookie (what the session store keys):
 * 0, or -1 when there is no well-formed one. Any thread. */
int app_session_hash(const struct http_request *req, char hash[65]);
/* The answer to a failed session lookup: 401 for -ENOENT, else 503. */
void app_session_failed(struct http_response *r, int rc);

/* Handlers (handlers.c), run on worker threads. */
/* Signup, stage 1 (store pool): validate, refuse a taken email (409)
 * before any hash; sets j->next = app_handle_signup when the email is free. */
void app_handle_signup_check(struct app_job *j, struct app_thread *t);
/* Signup, stage 2 (hash pool): hash the password and create the user. */
void app_handle_signup(struct app_job *j, struct app_thread *t);
void app_handle_login(struct app_job *j, struct app_thread *t);
void app_handle_logout(struct app_job *j, struct app_thread *t);
void app_handle_me(struct app_job *j, struct app_thread *t);
void app_handle_user(struct app_job *j, struct app_thread *t);
void app_handle_products(struct app_job *j, struct app_thread *t);
/* The product page's parts, for the loop's path too: the query string's
 * limit and after into j->limit and j->args (0), or -1 with a 400 in
 * j->resp; and the answer from the statement's rows. Any thread. */
int app_products_args(struct app_job *j);
void app_products_answer(struct app_job *j, const struct store_rows *rows);
void app_handle_product_get(struct app_job *j, struct app_thread *t);
void app_handle_product_create(struct app_job *j, struct app_thread *t);
void app_handle_product_update(struct app_job *j, struct app_thread *t);
void app_handle_product_views(struct app_job *j, struct app_thread *t);
void app_handle_orders_list(struct app_job *j, struct app_thread *t);
void app_handle_order_get(struct app_job *j, struct app_thread *t);
void app_handle_order_create(struct app_job *j, struct app_thread *t);
void app_handle_readyz(struct app_job *j, struct app_thread *t);

/* Answer helpers (any thread). */
void app_json_error(struct http_response *r, int status, const char *msg);
/* 429 (or status) with msg and Retry-After: ceil(wait_ms / 1000) s, >= 1. */
void app_retry_later(struct http_response *r, int status, const char *msg, uint64_t wait_ms);
/* Serve a cached product value (see handlers.c) with ETag/304 handling:
 * used by the loop's fast path and by the worker. */
void app_product_answer(struct app *a, const struct http_request *req, struct http_response *r,
                        int64_t id, const char *cached, size_t len);
/* The cache key of a product / user. */
void app_product_key(char *out, size_t outlen, int64_t id);

/* Write-back view counters (writeback.c). Thread-safe. */
struct writeback *writeback_new(void);
void writeback_free(struct writeback *w);
/* Count n views of product id. 0, or -ENOBUFS when too many distinct
 * products are pending (the caller answers 503). */
int writeback_add(struct writeback *w, int64_t id, int64_t n);
/* Views of id counted here and not yet flushed. */
int64_t writeback_pending(struct writeback *w, int64_t id);
size_t writeback_pending_keys(struct writeback *w);
/* Age in ms of the oldest unflushed count (0 when none). */
uint64_t writeback_oldest_ms(struct writeback *w, uint64_t now_ms);
/* Flush every pending count into the catalog in one transaction (worker
 * thread); on failure the counts are kept for the next flush. Returns the
 * number of products flushed, or negative. */
int writeback_flush(struct writeback *w, struct app *a, struct app_thread *t);

/* Metrics (app_metrics.c). */
void app_metrics_register(struct app *a);
void app_stats_init(struct app_stats *s);
void app_stats_free(struct app_stats *s);
void app_stats_count(struct app *a, enum app_route r, int status, uint64_t start_ns);
const char *app_route_name(enum app_route r);

#endif
