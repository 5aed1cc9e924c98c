/* placeholder */
#include "config.h"
#include "oauth.h"
