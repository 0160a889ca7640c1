#include <stdio.h>

void file2(void) { printf("F2\n"); }
