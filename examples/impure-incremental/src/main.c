#include <stdio.h>

void file1(void);
void file2(void);

int main(void) {
    printf("Main\n");
    file1();
    file2();
    return 0;
}
