/* Runner for the worker: pool logic, frame rules, and a real worker. */
#include "config.h"

#include <check.h>
#include <stdlib.h>

#include "test_worker_suites.h"

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(make_suite_idmap());
	srunner_add_suite(sr, make_suite_pool());
	srunner_add_suite(sr, make_suite_relay());
	srunner_add_suite(sr, make_suite_worker());
	srunner_add_suite(sr, make_suite_wsframe());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
