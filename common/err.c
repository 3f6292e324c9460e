/*
 * err.c — names and messages for the single error space, generated from MLR_ERR_MAP so the enum,
 * the names and the messages can never drift apart. Pure functions; thread-safe; O(1) per call.
 */
#include "common.h"

const char *mlr_strerror(int err)
{
    switch (err) {
    case MLR_OK:
        return "success";
#define XX(name, code, msg)                                                                        \
    case MLR_##name:                                                                               \
        return msg;
        MLR_ERR_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *mlr_err_name(int err)
{
    switch (err) {
    case MLR_OK:
        return "MLR_OK";
#define XX(name, code, msg)                                                                        \
    case MLR_##name:                                                                               \
        return "MLR_" #name;
        MLR_ERR_MAP(XX)
#undef XX
    default:
        return "MLR_UNKNOWN";
    }
}
