/* Passed with -include before fedge's generated C on AVR: every table goes to flash
 * (PROGMEM) and is read with pgm_read_*, so models larger than the 2 KiB of SRAM still run. */
#ifndef FEDGE_AVR_PRELUDE_H
#define FEDGE_AVR_PRELUDE_H
#include <avr/pgmspace.h>
#include <math.h>
#define FEDGE_CONST static const PROGMEM
#define FEDGE_RD_F32(t, i) pgm_read_float(&(t)[i])
#define FEDGE_RD_U8(t, i) pgm_read_byte(&(t)[i])
#define FEDGE_RD_U16(t, i) pgm_read_word(&(t)[i])
#define FEDGE_RD_U32(t, i) pgm_read_dword(&(t)[i])
#define FEDGE_RD_I8(t, i) ((signed char)pgm_read_byte(&(t)[i]))
#define FEDGE_RD_I16(t, i) ((short)pgm_read_word(&(t)[i]))
#ifndef HUGE_VALF
#define HUGE_VALF INFINITY
#endif
#endif
