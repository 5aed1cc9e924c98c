#include "config.h"
#include "worker.h"
int worker_main(int slot, int chan_fd) { (void)slot; (void)chan_fd; return 1; }
