/* Suites of the worker's Check runner (tests/check_worker.c). */
#ifndef CODEXPOOL_TEST_WORKER_SUITES_H
#define CODEXPOOL_TEST_WORKER_SUITES_H

#include <check.h>

Suite	*make_suite_idmap(void);
Suite	*make_suite_pool(void);
Suite	*make_suite_relay(void);
Suite	*make_suite_worker(void);
Suite	*make_suite_wsframe(void);

#endif
