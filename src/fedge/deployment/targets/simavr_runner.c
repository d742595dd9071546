/* fedge's simavr runner: runs an AVR ELF on a simulated ATmega and exits with its status.
 *
 *   fedge-simavr FIRMWARE.elf MCU FREQUENCY_HZ MAX_CYCLES
 *
 * GPIOR0 writes go to stdout, a GPIOR1 write sets the exit status, GPIOR2 writes mark the
 * start and end of timed sections (their cycles are summed). The stock `simavr` command always
 * exits 0; this one exits with the firmware's status, 125 on a crash, 124 past MAX_CYCLES and
 * 126 when the firmware stopped without a status. Register addresses are the ATmega328P's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_io.h"

#define GPIOR0_ADDR 0x3E
#define GPIOR1_ADDR 0x4A
#define GPIOR2_ADDR 0x4B

static int status = -1;
static avr_cycle_count_t mark_start, marked;
static unsigned long marks;

static void on_output(struct avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)avr, (void)addr, (void)param;
    putchar(v);
}

static void on_status(struct avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)avr, (void)addr, (void)param;
    status = v;
}

static void on_mark(struct avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)addr, (void)param, (void)v;
    if (marks++ & 1)
        marked += avr->cycle - mark_start;
    else
        mark_start = avr->cycle;
}

int main(int argc, char **argv)
{
    elf_firmware_t firmware;
    avr_t *avr;
    unsigned long long limit;
    int state = cpu_Running;

    if (argc != 5) {
        fprintf(stderr, "usage: %s FIRMWARE.elf MCU FREQUENCY_HZ MAX_CYCLES\n", argv[0]);
        return 2;
    }
    memset(&firmware, 0, sizeof firmware);
    if (elf_read_firmware(argv[1], &firmware) != 0) {
        fprintf(stderr, "fedge-simavr: cannot read %s\n", argv[1]);
        return 2;
    }
    avr = avr_make_mcu_by_name(argv[2]);
    if (avr == NULL) {
        fprintf(stderr, "fedge-simavr: unknown MCU %s\n", argv[2]);
        return 2;
    }
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr->frequency = strtoul(argv[3], NULL, 10);
    avr_load_firmware(avr, &firmware);
    limit = strtoull(argv[4], NULL, 10);
    avr_register_io_write(avr, GPIOR0_ADDR, on_output, NULL);
    avr_register_io_write(avr, GPIOR1_ADDR, on_status, NULL);
    avr_register_io_write(avr, GPIOR2_ADDR, on_mark, NULL);
    while (state != cpu_Done && state != cpu_Crashed) {
        state = avr_run(avr);
        if (avr->cycle > limit) {
            fflush(stdout);
            fprintf(stderr, "fedge-simavr: no end after %llu cycles\n", limit);
            return 124;
        }
    }
    fflush(stdout);
    fprintf(stderr, "fedge-simavr: cycles %llu marked %llu marks %lu\n",
            (unsigned long long)avr->cycle, (unsigned long long)marked, marks);
    if (state == cpu_Crashed) {
        fprintf(stderr, "fedge-simavr: the firmware crashed at pc 0x%x\n", (unsigned)avr->pc);
        return 125;
    }
    if (status < 0) {
        fprintf(stderr, "fedge-simavr: the firmware stopped without an exit status\n");
        return 126;
    }
    return status;
}
