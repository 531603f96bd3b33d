/* c-hello: a Skylark function in C, using only guest-sdk/include/skylark.h and wasi-libc.
 *
 * Usage: c-hello <chain> <task> <value>
 *
 * 1. skylark_put stores <value> as field <task> of the chain's bundle;
 * 2. skylark_put_many stores two more fields in one call: <task>.len (the value's length in
 *    decimal) and <task>.lang ("c");
 * 3. skylark_get_bundle reads the bundle back into a deliberately small buffer first: the
 *    host answers SKYLARK_BUFFER_TOO_SMALL with the full length and a handle, and
 *    skylark_take_result delivers it into a buffer of that length;
 * 4. a minimal MessagePack reader (below) walks the bundle map: it reads "source" (tier and
 *    node), counts "fields" and compares the three fields with what steps 1-2 stored;
 *    other keys ("chain", "placement", any newer one) are skipped.
 *
 * Prints one JSON line and exits 0:
 *   {"status":0,"abi":1,"fields":3,"value_ok":true,"tier":"local","node":"...",
 *    "bundle_len":N,"took_result":true}
 * On a failed call it reads skylark_last_error and prints, exiting 1:
 *   {"status":12,"name":"InvalidId","op":"put","error":"chain id ... allowed are ..."}
 *
 * Build (scripts/build.sh does this with the toolchain of scripts/install-wasi-clang.sh):
 *   wasm32-wasi-clang -O2 -I guest-sdk/include -c hello.c && wasm32-wasi-clang -o c-hello.wasm hello.o */
#include <skylark.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints `s[0..len]` as a JSON string. */
static void json_str(const char *s, size_t len) {
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

/* Reports a failed call with the host's message for it; returns the exit code. */
static int fail(const char *op, int32_t status) {
    char msg[512];
    uint32_t len = 0;
    int32_t st = skylark_last_error(msg, sizeof msg, &len);
    const char *name = skylark_status_name(status);
    printf("{\"status\":%d,\"name\":", (int)status);
    json_str(name ? name : "unknown", strlen(name ? name : "unknown"));
    printf(",\"op\":\"%s\",\"error\":", op);
    if (st == SKYLARK_OK) {
        json_str(msg, len < sizeof msg ? len : sizeof msg);
    } else {
        json_str("(skylark_last_error failed)", 27);
    }
    printf(",\"error_len\":%u}\n", (unsigned)len);
    return 1;
}

/* A minimal MessagePack reader over one buffer: just what a bundle needs (maps, str, bin),
 * and skipping of every other type. Any malformed or truncated input clears `ok`. */
typedef struct {
    const uint8_t *p, *end;
    int ok;
} mp_reader;

static uint32_t mp_be(mp_reader *r, int n) {
    uint32_t v = 0;
    if (!r->ok || r->end - r->p < n) {
        r->ok = 0;
        return 0;
    }
    for (int i = 0; i < n; i++) v = (v << 8) | *r->p++;
    return v;
}

static uint8_t mp_byte(mp_reader *r) { return (uint8_t)mp_be(r, 1); }

/* A map header: its number of entries. */
static uint32_t mp_map(mp_reader *r) {
    uint8_t b = mp_byte(r);
    if (b >= 0x80 && b <= 0x8f) return b & 0x0f;
    if (b == 0xde) return mp_be(r, 2);
    if (b == 0xdf) return mp_be(r, 4);
    r->ok = 0;
    return 0;
}

/* A str or bin: points `*s` at its bytes and returns their number. */
static uint32_t mp_bytes(mp_reader *r, const uint8_t **s) {
    uint8_t b = mp_byte(r);
    uint32_t n;
    if (b >= 0xa0 && b <= 0xbf) n = b & 0x1f;
    else if (b == 0xd9 || b == 0xc4) n = mp_be(r, 1);
    else if (b == 0xda || b == 0xc5) n = mp_be(r, 2);
    else if (b == 0xdb || b == 0xc6) n = mp_be(r, 4);
    else {
        r->ok = 0;
        return 0;
    }
    if (!r->ok || (uint32_t)(r->end - r->p) < n) {
        r->ok = 0;
        return 0;
    }
    *s = r->p;
    r->p += n;
    return n;
}

/* Skips one value of any type; `depth` bounds nesting. */
static void mp_skip(mp_reader *r, int depth) {
    if (!r->ok || r->p >= r->end || depth > 32) {
        r->ok = 0;
        return;
    }
    uint8_t b = *r->p;
    const uint8_t *s;
    uint32_t n = 0, items = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        r->p++; /* fixint, nil, bool */
    } else if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb) || (b >= 0xc4 && b <= 0xc6)) {
        mp_bytes(r, &s);
    } else if (b >= 0xcc && b <= 0xd3) { /* uint8..64, int8..64 */
        r->p++;
        n = 1u << ((b - 0xcc) & 3);
        if ((uint32_t)(r->end - r->p) < n) r->ok = 0; else r->p += n;
    } else if (b == 0xca || b == 0xcb) {
        r->p++;
        n = b == 0xca ? 4 : 8;
        if ((uint32_t)(r->end - r->p) < n) r->ok = 0; else r->p += n;
    } else if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) {
        items = 2 * mp_map(r);
    } else if (b >= 0x90 && b <= 0x9f) {
        r->p++;
        items = b & 0x0f;
    } else if (b == 0xdc || b == 0xdd) {
        r->p++;
        items = mp_be(r, b == 0xdc ? 2 : 4);
    } else if (b >= 0xd4 && b <= 0xd8) { /* fixext: type byte + 1..16 bytes */
        r->p++;
        n = 1 + (1u << (b - 0xd4));
        if ((uint32_t)(r->end - r->p) < n) r->ok = 0; else r->p += n;
    } else if (b >= 0xc7 && b <= 0xc9) { /* ext 8/16/32 */
        r->p++;
        n = 1 + mp_be(r, b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4);
        if (!r->ok || (uint32_t)(r->end - r->p) < n) r->ok = 0; else r->p += n;
    } else {
        r->ok = 0; /* 0xc1: never used */
    }
    for (uint32_t i = 0; i < items && r->ok; i++) mp_skip(r, depth + 1);
}

static int same(const uint8_t *s, uint32_t n, const char *want) {
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* What the bundle says. */
typedef struct {
    uint32_t fields;  /* entries of "fields" */
    int matched;      /* how many of the wanted fields held the wanted bytes */
    char tier[16], node[129];
} bundle_info;

/* Copies a str into a terminated buffer of `cap` bytes (truncating). */
static void copy_str(char *dst, size_t cap, const uint8_t *s, uint32_t n) {
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(dst, s, k);
    dst[k] = 0;
}

/* Walks the bundle map; `names`/`values` are the `count` fields to compare. */
static int read_bundle(const uint8_t *buf, uint32_t len, const char **names,
                       const char **values, int count, bundle_info *out) {
    mp_reader r = {buf, buf + len, 1};
    memset(out, 0, sizeof *out);
    uint32_t top = mp_map(&r);
    for (uint32_t i = 0; i < top && r.ok; i++) {
        const uint8_t *k;
        uint32_t kn = mp_bytes(&r, &k);
        if (!r.ok) break;
        if (same(k, kn, "fields")) {
            out->fields = mp_map(&r);
            for (uint32_t f = 0; f < out->fields && r.ok; f++) {
                const uint8_t *name, *val;
                uint32_t nn = mp_bytes(&r, &name);
                uint32_t vn = mp_bytes(&r, &val);
                for (int w = 0; r.ok && w < count; w++) {
                    if (same(name, nn, names[w]) && same(val, vn, values[w])) out->matched++;
                }
            }
        } else if (same(k, kn, "source")) {
            uint32_t m = mp_map(&r);
            for (uint32_t j = 0; j < m && r.ok; j++) {
                const uint8_t *sk, *sv;
                uint32_t skn = mp_bytes(&r, &sk);
                uint32_t svn = mp_bytes(&r, &sv);
                if (!r.ok) break;
                if (same(sk, skn, "tier")) copy_str(out->tier, sizeof out->tier, sv, svn);
                if (same(sk, skn, "node")) copy_str(out->node, sizeof out->node, sv, svn);
            }
        } else {
            mp_skip(&r, 0);
        }
    }
    return r.ok && r.p == r.end;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: c-hello <chain> <task> <value>\n");
        return 2;
    }
    const char *chain = argv[1], *task = argv[2], *value = argv[3];
    uint32_t chain_len = (uint32_t)strlen(chain);

    int32_t st = skylark_put(chain, chain_len, task, (uint32_t)strlen(task), value,
                             (uint32_t)strlen(value), NULL, 0);
    if (st != SKYLARK_OK) return fail("put", st);

    char len_task[SKYLARK_MAX_ID_LEN + 8], lang_task[SKYLARK_MAX_ID_LEN + 8], len_text[16];
    snprintf(len_task, sizeof len_task, "%s.len", task);
    snprintf(lang_task, sizeof lang_task, "%s.lang", task);
    snprintf(len_text, sizeof len_text, "%u", (unsigned)strlen(value));
    skylark_field_ref entries[2] = {
        {len_task, (uint32_t)strlen(len_task), len_text, (uint32_t)strlen(len_text)},
        {lang_task, (uint32_t)strlen(lang_task), "c", 1},
    };
    st = skylark_put_many(chain, chain_len, entries, 2, NULL, 0);
    if (st != SKYLARK_OK) return fail("put_many", st);

    /* Too small for any bundle on purpose: the host keeps the result under a handle. */
    uint8_t small[16];
    skylark_get_result res = {0, 0};
    uint8_t *bundle = small;
    int took_result = 0;
    st = skylark_get_bundle(chain, chain_len, NULL, 0, small, sizeof small, &res);
    if (st == SKYLARK_BUFFER_TOO_SMALL) {
        bundle = malloc(res.len);
        if (!bundle) {
            skylark_drop_result(res.handle);
            fprintf(stderr, "c-hello: out of memory for a %u-byte bundle\n", (unsigned)res.len);
            return 1;
        }
        st = skylark_take_result(res.handle, bundle, res.len, &res);
        if (st != SKYLARK_OK) {
            free(bundle);
            return fail("take_result", st);
        }
        took_result = 1;
    } else if (st != SKYLARK_OK) {
        return fail("get_bundle", st);
    }

    const char *names[3] = {task, len_task, lang_task};
    const char *values[3] = {value, len_text, "c"};
    bundle_info info;
    if (!read_bundle(bundle, res.len, names, values, 3, &info)) {
        printf("{\"status\":-1,\"op\":\"decode\",\"bundle_len\":%u}\n", (unsigned)res.len);
        return 1;
    }
    printf("{\"status\":0,\"abi\":%d,\"fields\":%u,\"value_ok\":%s,\"tier\":", (int)skylark_version(),
           (unsigned)info.fields, info.matched == 3 ? "true" : "false");
    json_str(info.tier, strlen(info.tier));
    printf(",\"node\":");
    json_str(info.node, strlen(info.node));
    printf(",\"bundle_len\":%u,\"took_result\":%s}\n", (unsigned)res.len,
           took_result ? "true" : "false");
    if (bundle != small) free(bundle);
    return 0;
}
