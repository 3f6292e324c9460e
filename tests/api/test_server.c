/*
 * test_server.c — unit tests of the listener's protected-mode address check: only loopback
 * peers (127.0.0.0/8, ::1, IPv4-mapped 127.x) are served while no users are configured.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "api_int.h"

static int v4(const char *ip)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return api_addr_is_loopback((struct sockaddr *)&sa);
}

static int v6(const char *ip)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    return api_addr_is_loopback((struct sockaddr *)&sa);
}

static void loopback_addresses_are_served(void **state)
{
    UNUSED(state);
    assert_true(v4("127.0.0.1"));
    assert_true(v4("127.255.0.9"));
    assert_true(v6("::1"));
    assert_true(v6("::ffff:127.0.0.1"));
}

static void other_addresses_are_not(void **state)
{
    UNUSED(state);
    assert_false(v4("10.0.0.1"));
    assert_false(v4("192.168.1.1"));
    assert_false(v4("128.0.0.1"));
    assert_false(v4("0.0.0.0"));
    assert_false(v6("::2"));
    assert_false(v6("::"));
    assert_false(v6("fe80::1"));
    assert_false(v6("::ffff:10.0.0.1"));
    struct sockaddr other = {.sa_family = AF_UNIX};
    assert_false(api_addr_is_loopback(&other));
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loopback_addresses_are_served),
        cmocka_unit_test(other_addresses_are_not),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
