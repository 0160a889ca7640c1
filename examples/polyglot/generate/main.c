/* generate: n samples of a seeded generator (a 64-bit LCG, so the bytes depend on the
 * parameters only), as /out/samples.csv with columns i and x (0 to 999). */
#include <stdint.h>
#include <stdio.h>

#include "repx.h"

int main(void) {
    long long n = repx_param_int("n", 24);
    uint64_t state = (uint64_t)repx_param_int("seed", 1);
    FILE *csv = fopen("/out/samples.csv", "w");
    if (!csv) {
        repx_log(REPX_ERROR, "cannot write /out/samples.csv");
        return 1;
    }
    fprintf(csv, "i,x\n");
    for (long long i = 0; i < n; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        fprintf(csv, "%lld,%llu\n", i, (unsigned long long)((state >> 33) % 1000));
        repx_progress((uint64_t)(i + 1), (uint64_t)n);
    }
    fclose(csv);
    return 0;
}
