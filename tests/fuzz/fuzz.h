/*
 * fuzz.h — what the libFuzzer targets in tests/fuzz/ share: parsing the fuzzer's bytes as a
 * request body exactly as the dispatcher does (api/routes.c: nesting capped at 64, strict, UTF-8
 * checked), and splitting one input into NUL-separated fields.
 *
 * Each target defines LLVMFuzzerTestOneInput(). Under -DMLR_FUZZ=ON it is linked with libFuzzer;
 * in every other build it is linked with replay.c, which feeds it the committed seed corpus and
 * the regression inputs, so those run as ordinary ctest cases (fuzz.<target>) in every build.
 */
#ifndef MLR_FUZZ_H
#define MLR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses @len bytes as one JSON value like the request dispatcher; NULL when it would refuse. */
static inline struct json_object *fuzz_json(const uint8_t *data, size_t len)
{
    if (len > (size_t)1 << 20)
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(64);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, (const char *)data, (int)len);
    int ok = json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/*
 * Cuts the next NUL-terminated field off the input (@data, @len) into @out (a heap-free view: it points into
 * the input, which libFuzzer does not NUL-terminate, so the caller copies when it needs a string).
 * The last field runs to the end of the input.
 */
static inline void fuzz_field(const uint8_t **data, size_t *len, const uint8_t **out,
                              size_t *outlen)
{
    const uint8_t *nul = memchr(*data, 0, *len);
    size_t n = nul ? (size_t)(nul - *data) : *len;
    *out = *data;
    *outlen = n;
    *data += nul ? n + 1 : n;
    *len -= nul ? n + 1 : n;
}

#endif /* MLR_FUZZ_H */
