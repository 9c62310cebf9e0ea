// Loaded with LD_PRELOAD by bench/layout.sh only, never in production. Linux maps a file's pages in 64 KiB
// runs around each page touched (fault-around), which hides which pages a process really uses. Fault-around
// stays inside one mapping, so before main() this splits the executable's read-only mappings into one
// mapping per page: every other page gets MADV_DONTDUMP, a flag that changes nothing but core dumps.
// Afterwards the resident pages are exactly the pages touched.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((constructor)) static void split_executable_mappings(void)
{
    char exe[4096];
    ssize_t length = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (length <= 0)
        return;
    exe[length] = 0;

    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return;
    unsigned long ranges[64][2];
    int count = 0;
    char line[8192];
    while (count < 64 && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char permissions[8], path[4096] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %4095s", &start, &end, permissions, path) >= 3 &&
            permissions[1] == '-' && strcmp(path, exe) == 0) {
            ranges[count][0] = start;
            ranges[count][1] = end;
            count++;
        }
    }
    fclose(maps);

    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < count; i++)
        for (unsigned long address = ranges[i][0]; address < ranges[i][1]; address += 2 * page)
            madvise((void *)address, page, MADV_DONTDUMP);
}
