/*
 * codexpool-bench soak: the fault soak with an oracle (bench/soak.c).
 */
#ifndef CODEXPOOL_BENCH_SOAK_H
#define CODEXPOOL_BENCH_SOAK_H

/* argv[0] is "soak"; returns the exit status (1 on any violation). */
int	cmd_soak(int argc, char **argv);

#endif
