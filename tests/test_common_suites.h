/* The common library's Check suites, one per module. */
#ifndef CODEXPOOL_TEST_COMMON_SUITES_H
#define CODEXPOOL_TEST_COMMON_SUITES_H

#include <check.h>

Suite	*make_suite_util(void);
Suite	*make_suite_log(void);
Suite	*make_suite_hash(void);
Suite	*make_suite_msg(void);
Suite	*make_suite_msgcodec(void);
Suite	*make_suite_config(void);
Suite	*make_suite_jsonutil(void);
Suite	*make_suite_jwt(void);

#endif
