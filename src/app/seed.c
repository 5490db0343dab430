/* surge seed: fill a store with demo data for `make run` and benchmarks.
 *
 * Products 1..N ("Product i", a price from 1.00 to 100.00 derived from i,
 * stock 1000) and users 1..N (user<i>@example.com, "User i", password
 * "password1234"). Rows that exist already are kept, so running it again
 * only adds what is missing. Every seeded user shares one argon2id hash of
 * the demo password (hashing 10,000 passwords at 64 MiB each would take
 * half an hour; a demo store needs the same password everywhere anyway). */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "app/app_int.h"
#include "base/log.h"

#define SEED_PASSWORD "password1234"
#define BATCH         1000

struct seed_config {
    char *data_dir, *store_url, *sessions_url;
    struct store_topology store_topo;
    long long products, users, shards, password_ops, password_memory_kib;
};

#define O(f) offsetof(struct seed_config, f)
static const struct conf_entry seed_table[] = {
    {"data-dir", CONF_STRING, O(data_dir), 0, 0, "./data", NULL, NULL, "DIR",
     "the store to fill (created if missing)"},
    {"store", CONF_STRING, O(store_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "store: sqlite: or postgres://USER@HOST:PORT/DB"},
    STORE_CONF_ENTRIES(struct seed_config, store_topo),
    {"sessions", CONF_STRING, O(sessions_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "session store driver"},
    {"products", CONF_INT, O(products), 0, 100000000, "0", NULL, NULL, "N", "products 1..N"},
    {"users", CONF_INT, O(users), 0, 100000000, "0", NULL, NULL, "N",
     "users user1@example.com .. userN@example.com (password password1234)"},
    {"shards", CONF_INT, O(shards), 1, STORE_MAX_SHARDS, "4", NULL, NULL, "N",
     "user shards (must match the app's)"},
    {"password-ops", CONF_INT, O(password_ops), 1, 20, "2", NULL, NULL, "N", "argon2id passes"},
    {"password-memory-kib", CONF_INT, O(password_memory_kib), 8, 1048576, "65536", NULL, NULL,
     "KIB", "argon2id memory"},
};
#undef O

void app_seed_help(FILE *out)
{
    fprintf(out, "usage: surge seed [--data-dir DIR] [--products N] [--users N]\n\n"
                 "Fill a store with demo data: products 1..N and users user1@example.com ..\n"
                 "userN@example.com, all with the password password1234. Existing rows are\n"
                 "kept, so it can run again to add more.\n\n");
    conf_print_help(seed_table, sizeof seed_table / sizeof seed_table[0], out);
}

static int seed_products(struct store_conns *c, long long n)
{
    struct store_db *db = store_conns_get(c, STORE_CATALOG, 0);
    if (!db)
        return -1;
    for (long long i = 1; i <= n;) {
        if (store_begin(c, db, 1) < 0)
            return -1;
        for (long long k = 0; k < BATCH && i <= n; k++, i++) {
            char name[48];
            snprintf(name, sizeof name, "Product %lld", i);
            int64_t price = 100 + (int64_t)((i * 7919) % 9901); /* 1.00 .. 100.00 */
            struct store_val a[4] = {store_int(i), store_text(name, strlen(name)), store_int(price),
                                     store_int(1000)};
            if (store_exec(c, db, P_INSERT_SEED, a, 4, NULL) < 0) {
                store_rollback(c, db);
                return -1;
            }
        }
        if (store_commit(c, db) < 0)
            return -1;
    }
    return 0;
}

static int seed_users(struct store_conns *c, const struct store_layout *l, long long n,
                      const char *hash)
{
    struct store_db *dir = store_conns_get(c, STORE_DIRECTORY, 0);
    if (!dir)
        return -1;
    int64_t now = (int64_t)(clock_wall_ms() / 1000 * 1000);
    for (long long i = 1; i <= n;) {
        long long first = i;
        /* Directory first (ids), then each shard: one transaction per database per batch. */
        if (store_begin(c, dir, 1) < 0)
            return -1;
        long long last = first + BATCH - 1 > n ? n : first + BATCH - 1;
        for (long long u = first; u <= last; u++) {
            char email[64];
            snprintf(email, sizeof email, "user%lld@example.com", u);
            struct store_val a[3] = {store_int(u), store_text(email, strlen(email)),
                                     store_int(now)};
            if (store_exec(c, dir, D_INSERT_SEED, a, 3, NULL) < 0) {
                store_rollback(c, dir);
                return -1;
            }
        }
        if (store_commit(c, dir) < 0)
            return -1;
        for (unsigned s = 0; s < l->nshards; s++) {
            struct store_db *db = store_conns_get(c, STORE_SHARD, s);
            if (!db || store_begin(c, db, 1) < 0)
                return -1;
            for (long long u = first; u <= last; u++) {
                if (store_shard_of((uint64_t)u, l->nshards) != s)
                    continue;
                char email[64], name[48];
                snprintf(email, sizeof email, "user%lld@example.com", u);
                snprintf(name, sizeof name, "User %lld", u);
                struct store_val a[5] = {store_int(u), store_text(email, strlen(email)),
                                         store_text(name, strlen(name)),
                                         store_text(hash, strlen(hash)), store_int(now)};
                if (store_exec(c, db, S_USER_INSERT_SEED, a, 5, NULL) < 0) {
                    store_rollback(c, db);
                    return -1;
                }
            }
            if (store_commit(c, db) < 0)
                return -1;
        }
        i = last + 1;
    }
    return 0;
}

int app_seed_main(int argc, char **argv)
{
    struct seed_config cfg;
    char err[512], *config_file = NULL, *positional[1];
    int npos = 0, status = 2;
    struct store_layout layout;
    memset(&layout, 0, sizeof layout);
    memset(&cfg, 0, sizeof cfg);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            app_seed_help(stdout);
            return 0;
        }
    }
    size_t n = sizeof seed_table / sizeof seed_table[0];
    if (conf_parse_cmdline(seed_table, n, &cfg, argc, argv, &config_file, positional, 1, &npos, err,
                           sizeof err) < 0)
        goto usage;
    if (npos) {
        snprintf(err, sizeof err, "unexpected argument '%s'", positional[0]);
        goto usage;
    }
    const struct session_driver *sd = session_driver_find(cfg.sessions_url);
    if (!sd) {
        snprintf(err, sizeof err, "--sessions: '%s': no session driver for this URL",
                 cfg.sessions_url);
        goto usage;
    }
    char why[384];
    if (store_layout_from_config(&layout, cfg.store_url, &cfg.store_topo, cfg.data_dir,
                                 (unsigned)cfg.shards, why, sizeof why) < 0) {
        snprintf(err, sizeof err, "--store: %s", why);
        goto usage;
    }
    status = 1;
    if (app_data_dir_create(cfg.data_dir, err, sizeof err) < 0) {
        fprintf(stderr, "surge seed: %s\n", err);
        goto out;
    }
    if (sodium_init() < 0 || app_schema_migrate(&layout, sd, err, sizeof err) < 0) {
        fprintf(stderr, "surge seed: %s\n", err);
        goto out;
    }
    char hash[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str(hash, SEED_PASSWORD, strlen(SEED_PASSWORD),
                          (unsigned long long)cfg.password_ops,
                          (size_t)cfg.password_memory_kib * 1024u) != 0) {
        fprintf(stderr, "surge seed: password hashing failed (out of memory?)\n");
        goto out;
    }
    struct store_conns c;
    app_schema_conns(&c, &layout);
    int rc = seed_products(&c, cfg.products);
    if (rc == 0)
        rc = seed_users(&c, &layout, cfg.users, hash);
    store_conns_close(&c);
    if (rc < 0) {
        fprintf(stderr, "surge seed: writing to the store failed (see the log above)\n");
        goto out;
    }
    printf("surge seed: %s has products 1..%lld and users 1..%lld (password %s)\n", cfg.data_dir,
           cfg.products, cfg.users, SEED_PASSWORD);
    status = 0;
    goto out;
usage:
    fprintf(stderr, "surge seed: %s\n", err);
out:
    store_layout_free(&layout);
    conf_free(seed_table, n, &cfg);
    free(config_file);
    return status;
}
