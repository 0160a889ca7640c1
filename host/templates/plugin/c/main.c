/* {name}: a RepX stage in C.
 *
 * It sees its inputs read-only at /in/<name>, writes its output to /out, may use /tmp,
 * and gets its parameters from the lab (params = { ... }).
 *
 * Parameters:
 * - n (int, default 10): how many squares to write.
 */
#include <stdio.h>
#include <stdlib.h>

#include "repx.h"

int main(void) {
    long long n = repx_param_int("n", 10);

    /* Inputs are directories, read-only. */
    char *data_dir = repx_input("data");
    char data[512];
    snprintf(data, sizeof data, "%s/data.txt", data_dir);
    free(data_dir);
    unsigned long long offset = 0, value;
    FILE *in = fopen(data, "r");
    if (!in) {
        repx_log(REPX_ERROR, "cannot read %s", data);
        return 1;
    }
    while (fscanf(in, "%llu", &value) == 1) offset += value;
    fclose(in);

    FILE *csv = fopen("/out/squares.csv", "w");
    if (!csv) return 1;
    fprintf(csv, "i,square\n");
    unsigned long long sum = 0;
    for (long long i = 0; i < n; i++) {
        unsigned long long square = (unsigned long long)(i * i) + offset;
        fprintf(csv, "%lld,%llu\n", i, square);
        sum += square;
        /* Shown in `repx run`'s progress bars. */
        repx_progress((uint64_t)(i + 1), (uint64_t)n);
    }
    fclose(csv);
    /* The numbers in metrics.json become columns of `repx results`. */
    FILE *metrics = fopen("/out/metrics.json", "w");
    if (!metrics) return 1;
    fprintf(metrics, "{\"sum\": %llu}\n", sum);
    fclose(metrics);

    /* A host command the stage was granted (tools = ["wc"]); a refusal is an error value. */
    const char *args[] = {"-l", data};
    repx_tool wc = {.tool = "wc", .args = args, .nargs = 2, .stdout_file = "/out/lines.txt"};
    int status;
    char *refused;
    if (repx_run_tool(&wc, &status, &refused) == 0) {
        repx_log(REPX_INFO, "wc exited with %d", status);
    } else {
        repx_log(REPX_WARN, "wc refused: %s", refused);
        free(refused);
    }
    return 0;
}
