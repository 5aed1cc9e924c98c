/* A worker process: one shard of the upstream WebSocket pool. */
#ifndef CODEXPOOL_WORKER_H
#define CODEXPOOL_WORKER_H

/* Run the worker for slot on the supervisor channel fd; returns the exit status. */
int	worker_main(int slot, int chan_fd);

#endif
