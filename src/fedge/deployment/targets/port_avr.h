/* fedge firmware port for AVR under fedge's simavr runner: characters written to GPIOR0
 * reach the host's stdout, the exit status goes to GPIOR1, and each write to GPIOR2 marks the
 * start or end of a timed prediction (the runner counts the cycles in between). The run ends
 * with cli(); sleep, which simavr treats as a clean stop. */
#ifndef FEDGE_PORT_H
#define FEDGE_PORT_H
#include <stdint.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

#define FEDGE_PORT_CYCLE_MARKS 1

static void fedge_port_init(void) {}
static void fedge_port_write(const char *s)
{
    while (*s) GPIOR0 = (uint8_t)*s++;
}
static void fedge_port_exit(int status)
{
    GPIOR1 = (uint8_t)status;
    cli();
    sleep_enable();
    sleep_cpu();
    for (;;) {
    }
}
static inline uint32_t fedge_port_counter(void)
{
    GPIOR2 = 1;
    return 0;
}

#endif
