/* fedge firmware port for bare-metal Cortex-M and RISC-V under QEMU: output and exit status
 * through semihosting; on RISC-V an instruction counter (minstret, exact under -icount). */
#ifndef FEDGE_PORT_H
#define FEDGE_PORT_H
#include <stdint.h>

static int fedge_semihost(int op, void *arg)
{
#if defined(__riscv)
    register int a0 __asm__("a0") = op;
    register void *a1 __asm__("a1") = arg;
    __asm__ volatile(".option push\n\t.option norvc\n\t"
                     "slli x0, x0, 0x1f\n\tebreak\n\tsrai x0, x0, 7\n\t.option pop"
                     : "+r"(a0)
                     : "r"(a1)
                     : "memory");
    return a0;
#else
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
#endif
}

static void fedge_port_write(const char *s) { fedge_semihost(0x04, (void *)s); } /* SYS_WRITE0 */

static void fedge_port_exit(int status)
{
    uint32_t block[2] = {0x20026u, (uint32_t)status}; /* ADP_Stopped_ApplicationExit */
    fedge_semihost(0x20, block);                      /* SYS_EXIT_EXTENDED */
    for (;;) {
    }
}

#if defined(__riscv)
#define FEDGE_PORT_COUNTER 1
__attribute__((aligned(4), noreturn)) static void fedge_trap(void)
{
    fedge_port_write("fedge: trap\n");
    fedge_port_exit(0x56);
    for (;;) {
    }
}
static void fedge_port_init(void)
{
    __asm__ volatile(".insn i 0x73, 1, x0, %0, 0x305" ::"r"(fedge_trap)); /* csrw mtvec */
}
static inline uint32_t fedge_port_counter(void)
{
    uint32_t v;
    __asm__ volatile(".insn i 0x73, 2, %0, x0, -1278" : "=r"(v)); /* csrr minstret (0xB02) */
    return v;
}
#else
static void fedge_port_init(void) {}
static inline uint32_t fedge_port_counter(void) { return 0; }
#endif

#endif
