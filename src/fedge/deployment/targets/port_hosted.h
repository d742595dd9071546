/* fedge firmware port for hosted targets (the host, aarch64 Linux under qemu-user): stdout
 * and the process exit status. No instruction counter. */
#ifndef FEDGE_PORT_H
#define FEDGE_PORT_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void fedge_port_init(void) {}
static void fedge_port_write(const char *s) { fputs(s, stdout); }
static void fedge_port_exit(int status)
{
    fflush(stdout);
    exit(status);
}
static inline uint32_t fedge_port_counter(void) { return 0; }

#endif
