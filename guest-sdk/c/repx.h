/*
 * repx.h: write RepX stages in C.
 *
 * A stage is a WASI command: `main` reads its parameters and inputs and writes to the
 * output directory. This header adds what files cannot say: parameters parsed from JSON,
 * the host's log lines and progress, and running a tool the stage was granted, whose
 * refusal comes back as an error value. `repx plugin build` compiles it with clang for
 * wasm32-wasi and makes the component; the contract is guest-sdk/wit/stage.wit.
 *
 * The exit status of `main`, or of `exit(n)` anywhere, is the job's (0 to 255).
 */
#ifndef REPX_H
#define REPX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { REPX_DEBUG, REPX_INFO, REPX_WARN, REPX_ERROR } repx_level;

/* The job's parameters as given (`REPX_PARAMS`), a JSON object; "{}" when unset. */
const char *repx_params_json(void);

/*
 * One top-level parameter, read as a type. Each returns `fallback` when the key is absent
 * and ends the job (exit status 2, naming the key) when it holds another type.
 * repx_param_string returns a string to free(), or a copy of `fallback` (NULL stays NULL).
 */
long long repx_param_int(const char *key, long long fallback);
double repx_param_double(const char *key, double fallback);
bool repx_param_bool(const char *key, bool fallback);
char *repx_param_string(const char *key, const char *fallback);
/* Whether the parameter is given at all. */
bool repx_param_has(const char *key);

/* The directory of input `name` (`/in/name`), to free(); ends the job naming the inputs
 * there are when it has none of that name. */
char *repx_input(const char *name);
/* The output directory, `/out`. */
const char *repx_out(void);

/* One line in the job log (printf format); warn and error are shown by `repx run` too. */
void repx_log(repx_level level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* `done` of `total` units of work, for `repx run`'s bars. */
void repx_progress(uint64_t done, uint64_t total);

/* A command for the host to run: a tool granted to the stage (`make`), or the guest path of
 * an executable inside an input. */
typedef struct {
    const char *tool;
    const char *const *args; /* `nargs` arguments; no shell sees them */
    size_t nargs;
    const char *cwd;         /* a guest directory; NULL means /tmp */
    const char *const *env;  /* `nenv` "KEY=VALUE" strings: the whole environment */
    size_t nenv;
    const char *stdout_file; /* a guest path for stdout; NULL sends it to the job log */
} repx_tool;

/*
 * Runs `request`. Returns 0 and sets *status to its exit status (128 + signal when killed),
 * or returns -1 when the host refused it (no grant, a path outside what the stage was
 * given, a command that did not start) and sets *error to the reason, to free().
 */
int repx_run_tool(const repx_tool *request, int *status, char **error);

#ifdef __cplusplus
}
#endif

#endif /* REPX_H */
