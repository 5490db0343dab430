/* jobs/mail: maildir delivery once per name (tmp/ then a link into new/). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

#include "jobs/mail.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-mail-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(mail, .init = setup, .fini = teardown);

static int count(const char *sub)
{
    char p[128];
    snprintf(p, sizeof p, "%s/m/%s", dir, sub);
    DIR *d = opendir(p);
    cr_assert_not_null(d, "%s", p);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

Test(mail, delivers_once_per_name)
{
    char m[128], err[256];
    snprintf(m, sizeof m, "%s/m", dir);
    cr_assert_eq(mail_dir_prepare(m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mail_maildir_deliver(m, "64", "hello\r\n", 7, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mail_maildir_deliver(m, "64", "again\r\n", 7, err, sizeof err), MAIL_ALREADY);
    cr_assert_eq(count("new"), 1);
    cr_assert_eq(count("tmp"), 0, "no tmp file left behind");
    char p[160], buf[16] = "";
    snprintf(p, sizeof p, "%s/new/64", m);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fread(buf, 1, sizeof buf - 1, f), 7);
    fclose(f);
    cr_assert_str_eq(buf, "hello\r\n", "the first delivery stays");
    /* A reader moved it to cur/: still delivered. */
    char q[160];
    snprintf(q, sizeof q, "%s/cur/64", m);
    cr_assert_eq(rename(p, q), 0);
    cr_assert_eq(mail_maildir_deliver(m, "64", "x", 1, err, sizeof err), MAIL_ALREADY);
    cr_assert_eq(count("new"), 0);
}

Test(mail, refuses_names_that_are_not_plain)
{
    char m[128], err[256];
    snprintf(m, sizeof m, "%s/m", dir);
    cr_assert_eq(mail_dir_prepare(m, err, sizeof err), 0, "%s", err);
    const char *bad[] = {
        "",       "../x",
        "a/b",    ".hidden",
        "sp ace", "0123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(mail_maildir_deliver(m, bad[i], "x", 1, err, sizeof err), -EINVAL, "%s",
                     bad[i]);
    cr_assert_eq(count("new"), 0);
}

Test(mail, reports_an_unwritable_dir)
{
    char err[256] = "";
    cr_assert_lt(mail_maildir_deliver("/nonexistent/surge-mail", "1", "x", 1, err, sizeof err), 0);
    cr_assert_neq(err[0], '\0');
}
