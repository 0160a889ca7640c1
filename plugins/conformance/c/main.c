/* The plugin contract as the C SDK sees it; see ../README.md. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repx.h"

extern char **environ;

static int compare(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Writes a JSON string literal. */
static void quote(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

/* Writes the sorted names of `items` as a JSON list. */
static void list(FILE *f, char **items, size_t n) {
    qsort(items, n, sizeof *items, compare);
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        quote(f, items[i]);
    }
    fputc(']', f);
}

static size_t entries(const char *path, char **names, size_t max) {
    size_t n = 0;
    DIR *dir = opendir(path);
    struct dirent *entry;
    while (dir && n < max && (entry = readdir(dir))) {
        if (strcmp(entry->d_name, ".") && strcmp(entry->d_name, "..")) names[n++] = strdup(entry->d_name);
    }
    if (dir) closedir(dir);
    return n;
}

int main(void) {
    char *names[64];
    int out_empty = entries("/out", names, 64) == 0;

    FILE *f = fopen("/out/report.json", "w");
    if (!f) return 1;
    fprintf(f, "{\n  \"out_empty_at_start\": %s,\n", out_empty ? "true" : "false");
    fputs("  \"inputs\": ", f);
    list(f, names, entries("/in", names, 64));
    int created = open("/in/data/new-file", O_WRONLY | O_CREAT, 0644);
    int opened = open("/in/data/a.txt", O_WRONLY);
    fprintf(f, ",\n  \"input_write_refused\": %s,\n", created < 0 && opened < 0 ? "true" : "false");
    fputs("  \"params\": ", f);
    const char *params = getenv("REPX_PARAMS");
    if (params) quote(f, params);
    else fputs("null", f);
    size_t n = 0;
    for (char **e = environ; *e && n < 64; e++) names[n++] = strndup(*e, strcspn(*e, "="));
    fputs(",\n  \"env_names\": ", f);
    list(f, names, n);
    fprintf(f, ",\n  \"clock_s\": %lld,\n", (long long)time(NULL));
    unsigned char random[8];
    getentropy(random, sizeof random);
    fputs("  \"random\": \"", f);
    for (int i = 0; i < 8; i++) fprintf(f, "%02x", random[i]);
    fputs("\",\n", f);

    const char *args[] = {"granted"};
    repx_tool echo = {.tool = "echo", .args = args, .nargs = 1, .stdout_file = "/out/tool.txt"};
    int status = -1;
    char *error = NULL;
    if (repx_run_tool(&echo, &status, &error) != 0) {
        repx_log(REPX_ERROR, "echo refused: %s", error);
        return 1;
    }
    fprintf(f, "  \"tool_granted\": %d,\n  \"tool_refused\": ", status);
    repx_tool nope = {.tool = "nope"};
    if (repx_run_tool(&nope, &status, &error) == 0) fprintf(f, "\"ran, status %d\"", status);
    else quote(f, error);
    fputs("\n}\n", f);
    fclose(f);

    repx_log(REPX_WARN, "conformance: C warns");
    repx_progress(1, 2);
    repx_progress(2, 2);
    return (int)repx_param_int("exit", 0);
}
