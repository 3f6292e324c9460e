/*
 * test_queue.c — unit tests of the task vocabulary: every spelling clients parse round-trips and
 * unknown or wrongly-cased spellings are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "queue.h"

static void type_names_round_trip(void **state)
{
    UNUSED(state);
    static const char *const expected[] = {"REGISTER_MODEL", "DEPLOY_MODEL", "UNDEPLOY_MODEL",
                                           "PREDICTION", "BATCH_INGEST", "BATCH_PREDICTION"};
    for (int i = 0; i < QUEUE_TASK__TYPES; i++) {
        enum queue_task_type t;
        assert_string_equal(queue_task_type_name((enum queue_task_type)i), expected[i]);
        assert_int_equal(queue_task_type_parse(expected[i], &t), MLR_OK);
        assert_int_equal(t, i);
    }
    enum queue_task_type t = QUEUE_TASK_PREDICTION;
    assert_int_equal(queue_task_type_parse("register_model", &t), MLR_EINVAL);
    assert_int_equal(t, QUEUE_TASK_PREDICTION);
    assert_null(queue_task_type_name(QUEUE_TASK__TYPES));
}

static void state_names_and_finality(void **state)
{
    UNUSED(state);
    static const char *const expected[] = {"CREATED", "RUNNING", "COMPLETED", "FAILED",
                                           "CANCELLED", "COMPLETED_WITH_ERROR", "CANCELLING",
                                           "EXPIRED", "UNREACHABLE"};
    static const int final[] = {0, 0, 1, 1, 1, 1, 0, 1, 1};
    for (int i = 0; i < QUEUE_STATE__COUNT; i++) {
        enum queue_task_state st;
        assert_string_equal(queue_task_state_name((enum queue_task_state)i), expected[i]);
        assert_int_equal(queue_task_state_parse(expected[i], &st), MLR_OK);
        assert_int_equal(st, i);
        assert_int_equal(queue_task_state_is_final(st), final[i]);
    }
    enum queue_task_state st;
    assert_int_equal(queue_task_state_parse("DONE", &st), MLR_EINVAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(type_names_round_trip),
        cmocka_unit_test(state_names_and_finality),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
