/* Unit tests for src/base/buf.c: capped growable buffers. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "base/buf.h"

/* Criterion's eq(str, ...) wants char *, which -Wwrite-strings literals are not. */
#define assert_str(got, want)                                                                      \
    cr_assert(strcmp((got), (want)) == 0, "got \"%s\" want \"%s\"", (got), (want))

Test(buf, starts_empty_and_null)
{
    struct buf b;
    buf_init(&b, 100);
    cr_assert(eq(ptr, b.data, NULL));
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(sz, b.max_size, 100));
}

Test(buf, append_and_puts_terminate)
{
    struct buf b;
    buf_init(&b, 1000);
    cr_assert(eq(int, buf_append(&b, "abc", 3), 0));
    cr_assert(eq(int, buf_puts(&b, "def"), 0));
    cr_assert(eq(sz, b.len, 6));
    assert_str(b.data, "abcdef");
    buf_free(&b);
}

Test(buf, append_zero_bytes_allocates_terminated_string)
{
    struct buf b;
    buf_init(&b, 10);
    cr_assert(eq(int, buf_append(&b, "", 0), 0));
    cr_assert(ne(ptr, b.data, NULL));
    assert_str(b.data, "");
    buf_free(&b);
}

Test(buf, grows_past_initial_capacity)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    char chunk[100];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 100; i++)
        cr_assert(eq(int, buf_append(&b, chunk, sizeof(chunk)), 0));
    cr_assert(eq(sz, b.len, 10000));
    cr_assert(ge(sz, b.cap, 10000));
    cr_assert(eq(chr, b.data[9999], 'x'));
    cr_assert(eq(chr, b.data[10000], '\0'));
    buf_free(&b);
}

Test(buf, printf_appends_formatted)
{
    struct buf b;
    buf_init(&b, 1000);
    cr_assert(eq(int, buf_printf(&b, "%d-%s", 42, "x"), 0));
    cr_assert(eq(int, buf_printf(&b, "|%05u", 7u), 0));
    assert_str(b.data, "42-x|00007");
    cr_assert(eq(sz, b.len, 10));
    buf_free(&b);
}

Test(buf, printf_larger_than_initial_allocation)
{
    struct buf b;
    buf_init(&b, 4096);
    char big[1000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert(eq(int, buf_printf(&b, "<%s>", big), 0));
    cr_assert(eq(sz, b.len, 1001));
    cr_assert(eq(chr, b.data[0], '<'));
    cr_assert(eq(chr, b.data[1000], '>'));
    cr_assert(eq(chr, b.data[1001], '\0'));
    buf_free(&b);
}

Test(buf, cap_exact_fit_then_enobufs_unchanged)
{
    struct buf b;
    buf_init(&b, 8);
    cr_assert(eq(int, buf_append(&b, "12345678", 8), 0));
    cr_assert(eq(int, buf_append(&b, "9", 1), -ENOBUFS));
    cr_assert(eq(sz, b.len, 8));
    assert_str(b.data, "12345678");
    cr_assert(eq(int, buf_append(&b, "", 0), 0));
    buf_free(&b);
}

Test(buf, printf_over_cap_leaves_buffer_unchanged)
{
    struct buf b;
    buf_init(&b, 10);
    cr_assert(eq(int, buf_puts(&b, "abcd"), 0));
    cr_assert(eq(int, buf_printf(&b, "%s", "0123456"), -ENOBUFS));
    cr_assert(eq(sz, b.len, 4));
    assert_str(b.data, "abcd");
    cr_assert(eq(int, buf_printf(&b, "%s", "012345"), 0));
    assert_str(b.data, "abcd012345");
    buf_free(&b);
}

Test(buf, puts_over_cap_on_empty_buffer)
{
    struct buf b;
    buf_init(&b, 3);
    cr_assert(eq(int, buf_puts(&b, "abcd"), -ENOBUFS));
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(int, buf_reserve(&b, 4), -ENOBUFS));
    cr_assert(eq(int, buf_reserve(&b, 3), 0));
    cr_assert(le(sz, b.cap, 3));
    buf_free(&b);
}

Test(buf, huge_cap_does_not_overflow_growth)
{
    struct buf b;
    buf_init(&b, (size_t)-1);
    cr_assert(eq(int, buf_append(&b, "abc", 3), 0));
    cr_assert(eq(int, buf_reserve(&b, 5000), 0));
    cr_assert(ge(sz, b.cap, 5003));
    cr_assert(eq(int, buf_reserve(&b, (size_t)-1), -ENOBUFS));
    buf_free(&b);
}

Test(buf, consume_moves_rest_to_front)
{
    struct buf b;
    buf_init(&b, 100);
    buf_puts(&b, "hello world");
    buf_consume(&b, 6);
    cr_assert(eq(sz, b.len, 5));
    assert_str(b.data, "world");
    buf_consume(&b, 0);
    assert_str(b.data, "world");
    buf_consume(&b, 5);
    cr_assert(eq(sz, b.len, 0));
    assert_str(b.data, "");
    buf_free(&b);
}

Test(buf, consume_then_refill_up_to_cap)
{
    struct buf b;
    buf_init(&b, 6);
    cr_assert(eq(int, buf_puts(&b, "abcdef"), 0));
    buf_consume(&b, 4);
    cr_assert(eq(int, buf_puts(&b, "ghij"), 0));
    assert_str(b.data, "efghij");
    cr_assert(eq(int, buf_puts(&b, "k"), -ENOBUFS));
    buf_free(&b);
}

Test(buf, reset_keeps_memory)
{
    struct buf b;
    buf_init(&b, 100);
    buf_puts(&b, "something");
    char *before = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    cr_assert(eq(sz, b.len, 0));
    assert_str(b.data, "");
    cr_assert(eq(ptr, b.data, before));
    cr_assert(eq(sz, b.cap, cap));
    buf_puts(&b, "again");
    assert_str(b.data, "again");
    buf_free(&b);
}

Test(buf, reset_and_consume_on_empty_buffer)
{
    struct buf b;
    buf_init(&b, 100);
    buf_reset(&b);
    buf_consume(&b, 0);
    cr_assert(eq(ptr, b.data, NULL));
    cr_assert(eq(sz, b.len, 0));
}

Test(buf, free_leaves_usable_buffer)
{
    struct buf b;
    buf_init(&b, 5);
    buf_puts(&b, "abc");
    buf_free(&b);
    cr_assert(eq(ptr, b.data, NULL));
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(sz, b.cap, 0));
    cr_assert(eq(sz, b.max_size, 5));
    cr_assert(eq(int, buf_puts(&b, "12345"), 0));
    assert_str(b.data, "12345");
    cr_assert(eq(int, buf_puts(&b, "6"), -ENOBUFS));
    buf_free(&b);
    buf_free(&b);
}
