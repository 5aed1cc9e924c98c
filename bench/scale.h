/* codexpool-bench's performance and scale modes (bench/scale.c). */
#ifndef BENCH_SCALE_H
#define BENCH_SCALE_H

int	cmd_cpu(int argc, char **argv);
int	cmd_memory(int argc, char **argv);
int	cmd_rss(int argc, char **argv);
int	cmd_scale(int argc, char **argv);
int	cmd_stream(int argc, char **argv);

#endif
