/* Unit tests for src/lb/exemplar.c: the slowest recent request. */
#include <criterion/criterion.h>
#include <string.h>

#include "lb/exemplar.h"

#define TID_A "4bf92f3577b34da6a3ce929d0e0e4736"
#define TID_B "0af7651916cd43dd8448eb211c80319c"

Test(exemplar, keeps_the_slowest_of_recent_windows)
{
    struct exemplar_slot s;
    struct exemplar e;
    exemplar_init(&s, 10000);
    cr_assert_eq(exemplar_best(&s, 1000, &e), -1);
    exemplar_offer(&s, 1000, 5000, TID_A, "GET /a", 6, 200);
    exemplar_offer(&s, 2000, 3000, TID_B, "GET /b", 6, 200); /* faster: ignored */
    cr_assert_eq(exemplar_best(&s, 2000, &e), 0);
    cr_assert_str_eq(e.trace_id, TID_A);
    cr_assert_str_eq(e.name, "GET /a");
    cr_assert_eq(e.dur_us, 5000);
    /* next window: a faster request still loses to the previous window's */
    exemplar_offer(&s, 12000, 4000, TID_B, "GET /b", 6, 503);
    cr_assert_eq(exemplar_best(&s, 12000, &e), 0);
    cr_assert_str_eq(e.trace_id, TID_A);
    /* two windows later the old one is gone */
    exemplar_offer(&s, 23000, 1000, TID_B, "GET /c", 6, 500);
    cr_assert_eq(exemplar_best(&s, 23000, &e), 0);
    cr_assert_str_eq(e.name, "GET /b", "%s", e.name);
    cr_assert_eq(e.status, 503);
    /* a quiet writer: the reader drops stale records by itself */
    cr_assert_eq(exemplar_best(&s, 60000, &e), -1);
    exemplar_destroy(&s);
}

Test(exemplar, long_names_are_cut)
{
    struct exemplar_slot s;
    struct exemplar e;
    char name[400];
    memset(name, 'x', sizeof name);
    exemplar_init(&s, 1000);
    exemplar_offer(&s, 10, 7, TID_A, name, sizeof name, 200);
    cr_assert_eq(exemplar_best(&s, 10, &e), 0);
    cr_assert_eq(strlen(e.name), sizeof e.name - 1);
    exemplar_destroy(&s);
}
