#include <stdio.h>

void file1(void) { printf("F1\n"); }
