/* skylark.h: the Skylark host ABI (version 2) for guests in C, compiled for wasm32-wasi.
 *
 * GENERATED from the skylark-abi crate; do not edit. Regenerate with
 *   cargo run -p skylark-abi --bin skylark-header > guest-sdk/include/skylark.h
 * (a unit test of skylark-abi fails while this file differs from the rendering).
 * ABI.md describes every function, option, status and the bundle encoding. */
#ifndef SKYLARK_H
#define SKYLARK_H

#if !defined(__wasm32__)
#error "skylark.h declares imports of wasm32 guests: compile with --target=wasm32-wasi"
#endif

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#define SKYLARK_STATIC_ASSERT static_assert
#else
#define SKYLARK_STATIC_ASSERT _Static_assert
#endif

/* The ABI version this header describes; skylark_version() returns the host's. */
#define SKYLARK_ABI_VERSION 2

/* The import module of every function below. */
#define SKYLARK_MODULE "skylark"

/* Chain and task ids: 1 to SKYLARK_MAX_ID_LEN bytes, each one of SKYLARK_ID_BYTES;
 * anything else is SKYLARK_INVALID_ID. */
#define SKYLARK_MAX_ID_LEN 128
#define SKYLARK_ID_BYTES "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

/* Most task ids a get's `require` option may list. */
#define SKYLARK_MAX_REQUIRE 1024

/* Status codes: every function but skylark_version returns one; every code but
 * SKYLARK_OK comes with a message (skylark_last_error). */
enum skylark_status {
    SKYLARK_OK = 0, /* ok */
    SKYLARK_NOT_FOUND = 1, /* bundle not found */
    SKYLARK_BUFFER_TOO_SMALL = 2, /* guest buffer too small */
    SKYLARK_INVALID_POINTER = 10, /* pointer or length outside guest memory */
    SKYLARK_NO_MEMORY = 11, /* calling module exports no memory */
    SKYLARK_INVALID_ID = 12, /* invalid chain or task id */
    SKYLARK_VALUE_TOO_LARGE = 13, /* value too large */
    SKYLARK_TOO_MANY_FIELDS = 14, /* too many fields */
    SKYLARK_INVALID_OPTIONS = 15, /* invalid options */
    SKYLARK_UNKNOWN_HANDLE = 16, /* unknown result handle */
    SKYLARK_DUPLICATE_FIELD = 17, /* duplicate task id in one call */
    SKYLARK_BUNDLE_TOO_LARGE = 18, /* bundle too large */
    SKYLARK_QUOTA_EXCEEDED = 19, /* namespace quota exceeded */
    SKYLARK_STORE_UNAVAILABLE = 20, /* store unavailable */
    SKYLARK_STORE_TIMEOUT = 21, /* store timeout */
    SKYLARK_STORE_ERROR = 22, /* store error */
    SKYLARK_BACKLOGGED = 23, /* propagation backlog full */
    SKYLARK_CONDITION_FAILED = 24, /* put condition does not hold */
    SKYLARK_IDEMPOTENCY_CONFLICT = 25, /* idempotency key reused with other bytes */
    SKYLARK_TIMED_OUT = 26, /* wait_for deadline passed */
    SKYLARK_CONFIG_INVALID = 30, /* invalid plugin configuration */
    SKYLARK_UNSUPPORTED = 31, /* not supported on this target */
    SKYLARK_INTERNAL = 99, /* internal host error */
};

/* The status's name as ABI.md spells it ("NotFound"); NULL for a code this header does
 * not know. */
static inline const char *skylark_status_name(int32_t status) {
    switch (status) {
    case SKYLARK_OK: return "Ok";
    case SKYLARK_NOT_FOUND: return "NotFound";
    case SKYLARK_BUFFER_TOO_SMALL: return "BufferTooSmall";
    case SKYLARK_INVALID_POINTER: return "InvalidPointer";
    case SKYLARK_NO_MEMORY: return "NoMemory";
    case SKYLARK_INVALID_ID: return "InvalidId";
    case SKYLARK_VALUE_TOO_LARGE: return "ValueTooLarge";
    case SKYLARK_TOO_MANY_FIELDS: return "TooManyFields";
    case SKYLARK_INVALID_OPTIONS: return "InvalidOptions";
    case SKYLARK_UNKNOWN_HANDLE: return "UnknownHandle";
    case SKYLARK_DUPLICATE_FIELD: return "DuplicateField";
    case SKYLARK_BUNDLE_TOO_LARGE: return "BundleTooLarge";
    case SKYLARK_QUOTA_EXCEEDED: return "QuotaExceeded";
    case SKYLARK_STORE_UNAVAILABLE: return "StoreUnavailable";
    case SKYLARK_STORE_TIMEOUT: return "StoreTimeout";
    case SKYLARK_STORE_ERROR: return "StoreError";
    case SKYLARK_BACKLOGGED: return "Backlogged";
    case SKYLARK_CONDITION_FAILED: return "ConditionFailed";
    case SKYLARK_IDEMPOTENCY_CONFLICT: return "IdempotencyConflict";
    case SKYLARK_TIMED_OUT: return "TimedOut";
    case SKYLARK_CONFIG_INVALID: return "ConfigInvalid";
    case SKYLARK_UNSUPPORTED: return "Unsupported";
    case SKYLARK_INTERNAL: return "Internal";
    default: return NULL;
    }
}

/* 1 when `id[0..len]` is a valid chain or task id, else 0. */
static inline int skylark_valid_id(const char *id, size_t len) {
    if (len == 0 || len > SKYLARK_MAX_ID_LEN) return 0;
    for (size_t i = 0; i < len; i++) {
        const char *allowed = SKYLARK_ID_BYTES;
        while (*allowed && *allowed != id[i]) allowed++;
        if (!*allowed) return 0;
    }
    return 1;
}

/* One field of skylark_put_many: where its task id and value are in guest memory (layout::FieldRef). */
typedef struct skylark_field_ref {
    const char *task_ptr;       /* the task id */
    uint32_t task_len;          /* its length in bytes */
    const void *value_ptr;      /* the value bytes */
    uint32_t value_len;         /* their length */
} skylark_field_ref;
SKYLARK_STATIC_ASSERT(sizeof(skylark_field_ref) == 16, "skylark_field_ref is 16 bytes");

/* What skylark_get_bundle and skylark_take_result write at result_ptr (layout::GetResult). */
typedef struct skylark_get_result {
    uint32_t len;               /* the full length of the encoded result */
    uint32_t handle;            /* with SKYLARK_BUFFER_TOO_SMALL: the handle for skylark_take_result; else 0 */
} skylark_get_result;
SKYLARK_STATIC_ASSERT(sizeof(skylark_get_result) == 8, "skylark_get_result is 8 bytes");

/* The table layout of a bundle (get option layout = "table", ABI.md "Bundle table
 * layout"): this header, field_count field records sorted by name, placement_count
 * placement records, then the bytes. Offsets count from the start of the block. */
#define SKYLARK_TABLE_MAGIC "SKT1"

/* The header of the table layout (table::HEADER_SIZE). */
typedef struct skylark_table_header {
    char magic[4];              /* SKYLARK_TABLE_MAGIC, not terminated */
    uint32_t len;               /* the block's length */
    uint32_t field_count;       /* records of skylark_table_field after this header */
    uint32_t placement_count;   /* records of skylark_table_placement after those */
    uint32_t chain_off;         /* the chain id */
    uint32_t chain_len;         /* its length */
    uint32_t node_off;          /* the node whose store answered */
    uint32_t node_len;          /* its length */
    uint32_t tier;              /* 0 local, 1 neighbour, 2 global */
    uint32_t reserved;          /* 0 */
} skylark_table_header;
SKYLARK_STATIC_ASSERT(sizeof(skylark_table_header) == 40, "skylark_table_header is 40 bytes");

/* One field of the table layout (table::FIELD_SIZE). */
typedef struct skylark_table_field {
    uint32_t name_off;          /* the task id */
    uint32_t name_len;          /* its length */
    uint32_t value_off;         /* the value bytes */
    uint32_t value_len;         /* their length */
    uint64_t version;           /* 0: none */
} skylark_table_field;
SKYLARK_STATIC_ASSERT(sizeof(skylark_table_field) == 24, "skylark_table_field is 24 bytes");

/* One placement entry of the table layout (table::PLACEMENT_SIZE). */
typedef struct skylark_table_placement {
    uint32_t task_off;          /* the task id */
    uint32_t task_len;          /* its length */
    uint32_t node_off;          /* the node its put elected */
    uint32_t node_len;          /* its length */
} skylark_table_placement;
SKYLARK_STATIC_ASSERT(sizeof(skylark_table_placement) == 16, "skylark_table_placement is 16 bytes");

#define SKYLARK_IMPORT(name) __attribute__((import_module(SKYLARK_MODULE), import_name(name)))

/* The imports (skylark_abi::imports::ALL). Pointers and lengths are in the guest's memory. */

/* The host's ABI version (compare with SKYLARK_ABI_VERSION). */
SKYLARK_IMPORT("skylark_version")
int32_t skylark_version(void);

/* Stores `value` as field `task` of the chain's bundle, in one round trip. */
SKYLARK_IMPORT("skylark_put")
int32_t skylark_put(const char *chain_ptr, uint32_t chain_len, const char *task_ptr, uint32_t task_len, const void *value_ptr, uint32_t value_len, const void *opts_ptr, uint32_t opts_len);

/* Stores `entries_count` fields of one bundle in one round trip, all or none. */
SKYLARK_IMPORT("skylark_put_many")
int32_t skylark_put_many(const char *chain_ptr, uint32_t chain_len, const skylark_field_ref *entries_ptr, uint32_t entries_count, const void *opts_ptr, uint32_t opts_len);

/* Reads the chain's bundle (MessagePack) into buf, or keeps it under a handle (SKYLARK_BUFFER_TOO_SMALL). */
SKYLARK_IMPORT("skylark_get_bundle")
int32_t skylark_get_bundle(const char *chain_ptr, uint32_t chain_len, const void *opts_ptr, uint32_t opts_len, void *buf_ptr, uint32_t buf_cap, skylark_get_result *result_ptr);

/* Delivers the result kept under `handle` into buf and forgets it. */
SKYLARK_IMPORT("skylark_take_result")
int32_t skylark_take_result(uint32_t handle, void *buf_ptr, uint32_t buf_cap, skylark_get_result *result_ptr);

/* Forgets the result kept under `handle`. */
SKYLARK_IMPORT("skylark_drop_result")
int32_t skylark_drop_result(uint32_t handle);

/* Copies the last failure's message (UTF-8, no terminator, truncated to buf_cap) and writes its full length at len_ptr. */
SKYLARK_IMPORT("skylark_last_error")
int32_t skylark_last_error(char *buf_ptr, uint32_t buf_cap, uint32_t *len_ptr);

/* As skylark_put_many, with conditions; writes entries_count uint64 versions. */
SKYLARK_IMPORT("skylark_put_v2")
int32_t skylark_put_v2(const char *chain_ptr, uint32_t chain_len, const skylark_field_ref *entries_ptr, uint32_t entries_count, const void *opts_ptr, uint32_t opts_len, uint64_t *versions_ptr);

#ifdef __cplusplus
}
#endif

#endif /* SKYLARK_H */
