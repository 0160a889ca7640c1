/*
 * repx.c: the C SDK's implementation (see repx.h), and the glue that makes a wasm32-wasi
 * reactor module a RepX command.
 *
 * Why a reactor: Debian's wasi-libc (2022) wraps every export of a command module in its
 * constructors, `cabi_realloc` included, so a host call that returns a string (run-tool's
 * error) would re-enter them and trap. `repx plugin build` links with -mexec-model=reactor;
 * `_start` below is the command's entry, which the WASI adapter calls after `_initialize`.
 *
 * Why `_Exit` is wrapped (-Wl,--wrap=_Exit): WASI 0.2's `exit` carries only success or
 * failure, so the adapter turns `exit(3)` into status 1. The wrapper reports the code
 * itself through `wasi:cli/exit.exit-with-code`.
 */
#include "repx.h"

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- host imports (canonical ABI of repx:stage/host and wasi:cli/exit) ---- */

__attribute__((import_module("repx:stage/host@0.1.0"), import_name("log"))) extern void
repx_host_log(int32_t level, const char *message, size_t length);

__attribute__((import_module("repx:stage/host@0.1.0"), import_name("progress"))) extern void
repx_host_progress(int64_t done, int64_t total);

/* tool-request flattened: tool, args, cwd, env, stdout-file (option<string>), then the
 * address of the result<s32, string> (tag at 0, payload at 4). */
__attribute__((import_module("repx:stage/host@0.1.0"), import_name("run-tool"))) extern void
repx_host_run_tool(const char *tool, size_t tool_len, const void *args, size_t nargs,
                   const char *cwd, size_t cwd_len, const void *env, size_t nenv,
                   int32_t has_stdout, const char *stdout_file, size_t stdout_len, void *ret);

__attribute__((import_module("wasi:cli/exit@0.2.12"), import_name("exit-with-code")))
_Noreturn extern void repx_host_exit_with_code(int32_t code);

/* The host allocates the strings it returns through this. */
__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *ptr, size_t old_size,
                                                                 size_t align, size_t size) {
    (void)old_size;
    if (size == 0) return (void *)align;
    void *grown = realloc(ptr, size);
    if (!grown) abort();
    return grown;
}

extern int __main_void(void);
extern _Noreturn void __real__Exit(int code);

_Noreturn void __wrap__Exit(int code) {
    if (code == 0) __real__Exit(0);
    int status = code & 0xff;
    repx_host_exit_with_code(status ? status : 1);
}

extern void __wasm_call_dtors(void);

/* As wasi-libc's own command `_start`: atexit handlers and stdio flushed, then a success
 * returns and only a failure goes through `_Exit`. An exit, even exit(0), unwinds the
 * component as an error, which costs the host a backtrace on every job. */
__attribute__((export_name("_start"))) void _start(void) {
    int status = __main_void();
    __wasm_call_dtors();
    if (status != 0) _Exit(status);
}

/* ---- parameters: a small reader for the top-level keys of REPX_PARAMS ---- */

static const char *params(void) {
    const char *json = getenv("REPX_PARAMS");
    return json ? json : "{}";
}

const char *repx_params_json(void) { return params(); }

static const char *skip_space(const char *p) {
    while (*p && isspace((unsigned char)*p)) p++;
    return p;
}

/* Past the string that starts at `p` (on its quote); NULL when unterminated. */
static const char *skip_string(const char *p) {
    for (p++; *p; p++) {
        if (*p == '\\' && p[1]) p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

/* Past the value at `p`; NULL when malformed. */
static const char *skip_value(const char *p) {
    p = skip_space(p);
    if (*p == '"') return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = skip_string(p);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']' && !isspace((unsigned char)*p)) p++;
    return p;
}

/* Appends the decoded string at `p` to a new buffer; only \uXXXX below 0x800 and the
 * plain escapes are decoded, which covers what a lab writes. */
static char *decode_string(const char *p, const char *end) {
    char *out = malloc((size_t)(end - p) + 1), *o = out;
    if (!out) abort();
    for (p++; p < end - 1; p++) {
        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned code = 0;
            sscanf(p + 1, "%4x", &code);
            p += 4;
            if (code < 0x80) *o++ = (char)code;
            else if (code < 0x800) {
                *o++ = (char)(0xc0 | (code >> 6));
                *o++ = (char)(0x80 | (code & 0x3f));
            } else {
                *o++ = (char)(0xe0 | (code >> 12));
                *o++ = (char)(0x80 | ((code >> 6) & 0x3f));
                *o++ = (char)(0x80 | (code & 0x3f));
            }
            break;
        }
        default: *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

/* The value of top-level `key`, or NULL; *end is set past it. */
static const char *find(const char *key, const char **end) {
    const char *p = skip_space(params());
    if (*p != '{') return NULL;
    p = skip_space(p + 1);
    while (*p == '"') {
        const char *key_end = skip_string(p);
        if (!key_end) return NULL;
        char *name = decode_string(p, key_end);
        int match = strcmp(name, key) == 0;
        free(name);
        p = skip_space(key_end);
        if (*p != ':') return NULL;
        p = skip_space(p + 1);
        const char *value_end = skip_value(p);
        if (!value_end) return NULL;
        if (match) {
            *end = value_end;
            return p;
        }
        p = skip_space(value_end);
        if (*p != ',') return NULL;
        p = skip_space(p + 1);
    }
    return NULL;
}

static _Noreturn void wrong_type(const char *key, const char *wanted, const char *value,
                                 const char *end) {
    repx_log(REPX_ERROR, "parameter `%s` must be %s, not %.*s", key, wanted, (int)(end - value),
             value);
    exit(2);
}

bool repx_param_has(const char *key) {
    const char *end;
    return find(key, &end) != NULL;
}

long long repx_param_int(const char *key, long long fallback) {
    const char *end, *value = find(key, &end);
    if (!value) return fallback;
    char *stop;
    long long n = strtoll(value, &stop, 10);
    if (stop != end || stop == value) wrong_type(key, "an integer", value, end);
    return n;
}

double repx_param_double(const char *key, double fallback) {
    const char *end, *value = find(key, &end);
    if (!value) return fallback;
    char *stop;
    double x = strtod(value, &stop);
    if (stop != end || stop == value) wrong_type(key, "a number", value, end);
    return x;
}

bool repx_param_bool(const char *key, bool fallback) {
    const char *end, *value = find(key, &end);
    if (!value) return fallback;
    if (end - value == 4 && strncmp(value, "true", 4) == 0) return true;
    if (end - value == 5 && strncmp(value, "false", 5) == 0) return false;
    wrong_type(key, "true or false", value, end);
}

char *repx_param_string(const char *key, const char *fallback) {
    const char *end, *value = find(key, &end);
    if (!value) return fallback ? strdup(fallback) : NULL;
    if (*value != '"') wrong_type(key, "a string", value, end);
    return decode_string(value, end);
}

/* ---- paths ---- */

char *repx_input(const char *name) {
    size_t size = strlen(name) + 5;
    char *path = malloc(size);
    if (!path) abort();
    snprintf(path, size, "/in/%s", name);
    struct stat st;
    if (strchr(name, '/') == NULL && stat(path, &st) == 0) return path;
    char names[512] = "";
    DIR *dir = opendir("/in");
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        if (entry->d_name[0] == '.') continue;
        if (names[0]) strncat(names, ", ", sizeof names - strlen(names) - 1);
        strncat(names, entry->d_name, sizeof names - strlen(names) - 1);
    }
    if (dir) closedir(dir);
    repx_log(REPX_ERROR, "the stage has no input `%s`; its inputs: %s", name,
             names[0] ? names : "none");
    exit(2);
}

const char *repx_out(void) { return "/out"; }

/* ---- host functions ---- */

void repx_log(repx_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *line = NULL;
    int length = vasprintf(&line, format, args);
    va_end(args);
    if (length < 0) return;
    repx_host_log((int32_t)level, line, (size_t)length);
    free(line);
}

void repx_progress(uint64_t done, uint64_t total) {
    repx_host_progress((int64_t)done, (int64_t)total);
}

typedef struct {
    const char *ptr;
    size_t len;
} wit_string;

static wit_string str(const char *s) { return (wit_string){s, s ? strlen(s) : 0}; }

int repx_run_tool(const repx_tool *request, int *status, char **error) {
    wit_string *args = calloc(request->nargs + 1, sizeof *args);
    wit_string *env = calloc(2 * request->nenv + 1, sizeof *env);
    if (!args || !env) abort();
    for (size_t i = 0; i < request->nargs; i++) args[i] = str(request->args[i]);
    for (size_t i = 0; i < request->nenv; i++) {
        const char *pair = request->env[i], *eq = strchr(pair, '=');
        env[2 * i] = (wit_string){pair, eq ? (size_t)(eq - pair) : strlen(pair)};
        env[2 * i + 1] = eq ? str(eq + 1) : str("");
    }
    wit_string tool = str(request->tool), cwd = str(request->cwd ? request->cwd : "/tmp"),
               out = str(request->stdout_file);
    _Alignas(4) uint8_t ret[12];
    repx_host_run_tool(tool.ptr, tool.len, args, request->nargs, cwd.ptr, cwd.len, env,
                       request->nenv, request->stdout_file != NULL, out.ptr, out.len, ret);
    free(args);
    free(env);
    if (ret[0] == 0) {
        if (status) *status = *(int32_t *)(ret + 4);
        if (error) *error = NULL;
        return 0;
    }
    char *text = *(char **)(ret + 4);
    size_t length = *(uint32_t *)(ret + 8);
    if (error) {
        *error = malloc(length + 1);
        if (!*error) abort();
        memcpy(*error, text, length);
        (*error)[length] = 0;
    }
    free(text);
    return -1;
}
