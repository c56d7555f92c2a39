/* emulated_terminals: konnektord module that runs kt-emulator terminals
 * in-process (the demo configuration's terminals), one per
 * [emulated_terminal "ID"] section, on the main loop. Each has its control
 * socket (kt-emulator(1), `kt-ctl SOCKET insert 1 CARDFILE`) in the runtime
 * directory, so a script or a person can insert and remove cards while
 * konnektord runs. The ct module connects to them like to any terminal:
 * give each a [terminal "ID"] section with the same port. */
#ifndef KONNEKTOR_KTEMU_MODULE_H
#define KONNEKTOR_KTEMU_MODULE_H

#include "konnektor/module.h"

extern const kon_module_t kon_emulated_terminals_module;

#endif
