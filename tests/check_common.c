/* Runner for the common library's unit tests. */
#include "config.h"

#include <check.h>
#include <stdlib.h>

#include "test_common_suites.h"

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(make_suite_util());
	srunner_add_suite(sr, make_suite_log());
	srunner_add_suite(sr, make_suite_hash());
	srunner_add_suite(sr, make_suite_msg());
	srunner_add_suite(sr, make_suite_msgcodec());
	srunner_add_suite(sr, make_suite_config());
	srunner_add_suite(sr, make_suite_jsonutil());
	srunner_add_suite(sr, make_suite_jwt());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
