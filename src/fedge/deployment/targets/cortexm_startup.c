/* fedge Cortex-M startup: vector table, .data/.bss set-up, FPU enable, main, semihosting exit.
 * A fault ends the run through semihosting with status 0x56 instead of looping forever. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void fedge_reset(void);
void fedge_fault(void);

__attribute__((section(".isr_vector"), used)) static void (*const fedge_vectors[16])(void) = {
    (void (*)(void))(&_estack), fedge_reset, fedge_fault, fedge_fault, fedge_fault,
    fedge_fault, fedge_fault, 0, 0, 0, 0, fedge_fault, fedge_fault, 0, fedge_fault, fedge_fault,
};

static int fedge_startup_semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void fedge_startup_exit(int status)
{
    uint32_t block[2] = {0x20026u, (uint32_t)status}; /* ADP_Stopped_ApplicationExit */
    fedge_startup_semihost(0x20, block);              /* SYS_EXIT_EXTENDED */
    for (;;) {
    }
}

void fedge_fault(void)
{
    fedge_startup_semihost(0x04, (void *)"fedge: hard fault\n");
    fedge_startup_exit(0x56);
}

void fedge_reset(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10/CP11 full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    fedge_startup_exit(main());
}
